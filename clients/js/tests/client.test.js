// The client against the real server over TLS: login and catalog (from a
// stored secret and from a code a person typed), asking, the typed errors,
// a delegation, a stream, continuing a thread, the flood limits, and a
// signed command. `tests/js_client.rs` starts the server (echo, calc,
// delegator, counter, hostile, llm) and runs this file.

import assert from "node:assert/strict";
import path from "node:path";
import { describe, test } from "node:test";

import {
  AccessDenied,
  AgentFailed,
  AgentServerError,
  AuthenticationFailed,
  Busy,
  Client,
  CommandRefused,
  Flooding,
  NoListener,
  SessionEnded,
  ThreadLimit,
  Totp,
  UnknownThread,
  element,
} from "../index.js";
import { COMMANDS, LLM_ENDPOINT, SERVER, USERS, client, connected, sleep, user } from "./support.js";

describe("basics", () => {
  test("a login gives the catalog of the user's tags", async () => {
    await connected(client("login"), async (c) => {
      const catalog = c.catalog;
      assert.equal(catalog.user, "login");
      assert.ok(c.sessionId);
      assert.equal(catalog.sessionTimeout, 1800);
      // Allowed and listened to; `nobody` is allowed but nobody listens,
      // `twin` is not there yet, `secret` is not allowed.
      assert.deepEqual(
        [...catalog.tags].sort(),
        ["ask", "calculate", "count", "echo", "hold", "spray", "square-sum", "trap"],
      );
      assert.equal(catalog.agent("calculate"), "calc");
      assert.equal(c.logins, 1);
      assert.ok(c.connected);
    });
  });

  test("a code typed by a person logs in once; the same code again is refused", async () => {
    const name = user("typed");
    const code = await new Totp(USERS[name]).at();
    const first = new Client(SERVER, name, { code });
    await connected(first, async (c) => {
      assert.equal((await c.ask("<echo>typed</echo>")).text, "typed");
    });
    const again = new Client(SERVER, name, { code });
    await assert.rejects(again.connect(), AuthenticationFailed);
  });

  test("ask returns the answer envelope and the repair notes", async () => {
    await connected(client("ask"), async (c) => {
      const answer = await c.ask("<calculate>2 + 3 * 4</calculate>");
      assert.equal(answer.payload, "<result>14</result>");
      assert.deepEqual([answer.sender, answer.text], ["calc", "14"]);
      assert.ok(answer.thread);
      assert.deepEqual(answer.huh, []);
      const repaired = await c.ask("Sure: <echo>fish & chips");
      assert.equal(repaired.payload, "<echoed>fish &amp; chips</echoed>");
      assert.equal(repaired.text, "fish & chips");
      assert.ok(repaired.huh.includes("escaped a bare &"), String(repaired.huh));
      assert.notEqual(repaired.thread, answer.thread);
    });
  });

  test("concurrent asks on one connection each get their own answer", async () => {
    await connected(client("concurrent"), async (c) => {
      const questions = Array.from({ length: 40 }, (_, i) => element("echo", `question ${i}`));
      const answers = await Promise.all(questions.map((q) => c.ask(q)));
      assert.deepEqual(
        answers.map((a) => a.text),
        questions.map((_, i) => `question ${i}`),
      );
      assert.equal(new Set(answers.map((a) => a.thread)).size, 40);
    });
  });

  test("a delegation is answered by the agent delegated to", async () => {
    await connected(client("delegation"), async (c) => {
      const answer = await c.ask("<square-sum><n>3</n><n>4</n></square-sum>");
      assert.equal(answer.payload, "<result>25</result>");
      // The delegator only emitted <calculate>; the calculator answered.
      assert.equal(answer.sender, "calc");
    });
  });

  test("a thread is continued, and an unknown one refused", async () => {
    await connected(client("continue"), async (c) => {
      const first = await c.ask("<count/>");
      assert.equal(first.payload, "<count-is>1</count-is>");
      const second = await c.ask("<count/>", { thread: first.thread });
      assert.deepEqual([second.thread, second.payload], [first.thread, "<count-is>2</count-is>"]);
      assert.equal(await c.send("<count/>", { thread: first.thread }), first.thread);
      const frames = [];
      for await (const frame of c.thread(first.thread)) frames.push(frame.payload);
      assert.deepEqual(frames, ["<count-is>3</count-is>"]);
      // A whole envelope, as a person might type it, continues its thread too.
      const whole = `<message><meta><thread>${first.thread}</thread></meta><count/></message>`;
      assert.equal((await c.ask(whole)).payload, "<count-is>4</count-is>");
      await assert.rejects(c.ask("<count/>", { thread: "no-such-thread" }), (error) => {
        assert.ok(error instanceof UnknownThread);
        assert.equal(error.thread, "no-such-thread");
        return true;
      });
    });
  });

  test("closing ends the session", async () => {
    const c = client("ending");
    await connected(c, async () => {
      await c.ask("<echo>bye</echo>");
    });
    assert.equal(c.connected, false);
    await assert.rejects(c.ask("<echo>again</echo>"), SessionEnded);
  });

  test("a wrong secret fails authentication", async () => {
    const c = new Client(SERVER, user("wrong-secret"), {
      totpSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
      loginAttempts: 1,
    });
    await assert.rejects(c.connect(), { name: "AuthenticationFailed", code: "authentication-failed" });
  });
});

describe("errors", () => {
  test("access denied and no listener leave the connection open", async () => {
    await connected(client("denied"), async (c) => {
      await assert.rejects(c.ask("<secret>open sesame</secret>"), (error) => {
        assert.ok(error instanceof AccessDenied);
        assert.deepEqual([error.code, error.tag], ["access-denied", "secret"]);
        return true;
      });
      await assert.rejects(c.ask("<nobody/>"), (error) => {
        assert.ok(error instanceof NoListener);
        assert.equal(error.tag, "nobody");
        return true;
      });
      assert.equal((await c.ask("<echo>still here</echo>")).text, "still here");
    });
  });

  test("an agent failure names the agent", async () => {
    await connected(client("failure"), async (c) => {
      await assert.rejects(c.ask("<trap/>"), (error) => {
        assert.ok(error instanceof AgentFailed && error instanceof AgentServerError);
        assert.deepEqual([error.code, error.agent], ["agent-failed", "hostile"]);
        assert.match(error.reason, /trapped/);
        assert.ok(error.thread);
        return true;
      });
    });
  });

  test("a full agent is busy", async () => {
    // hostile runs one call at a time and queues none.
    await connected(client("busy-a"), async (a) => {
      await connected(client("busy-b"), async (b) => {
        const held = a.ask('<hold ms="800"/>');
        await sleep(300);
        await assert.rejects(b.ask('<hold ms="10"/>'), (error) => {
          assert.ok(error instanceof Busy);
          assert.equal(error.agent, "hostile");
          return true;
        });
        assert.equal((await held).payload, "<held></held>");
      });
    });
  });

  test("a runaway thread hits its limit", async () => {
    await connected(client("limit"), async (c) => {
      // Each <spray/> answers 200 more, all delivered to hostile again.
      await assert.rejects(c.ask("<spray/>"), (error) => {
        assert.ok(error instanceof ThreadLimit);
        assert.match(error.reason, /1024/);
        return true;
      });
    });
  });
});

describe("streams", () => {
  test("partials stream in before the answer", async () => {
    assert.ok(LLM_ENDPOINT, "AGENTSERVER_LLM_ENDPOINT is not set");
    await connected(client("stream"), async (c) => {
      const frames = [];
      for await (const frame of c.stream(element("ask", "What is wasm", { endpoint: LLM_ENDPOINT }))) {
        frames.push(frame);
      }
      assert.ok(frames.length > 2, `${frames.length} frames`);
      const final = /** @type {import("../index.js").Envelope} */ (frames.pop());
      assert.deepEqual(new Set(frames.map((f) => f.tag)), new Set(["partial"]));
      assert.equal(final.tag, "answer");
      assert.equal(frames.map((f) => f.text).join(""), final.text);
      assert.deepEqual(new Set([...frames, final].map((f) => f.thread)), new Set([final.thread]));
      // ask() returns the same shape: the partials, then the answer.
      const answer = await c.ask(element("ask", "And components", { endpoint: LLM_ENDPOINT }));
      assert.equal(answer.tag, "answer");
      assert.ok(answer.partials.length > 0);
      assert.equal(answer.partials.map((p) => p.text).join(""), answer.text);
    });
  });
});

describe("flood limits", () => {
  test("a burst stays within the flood limit", async () => {
    // 150 asks at once, then 150 messages on one thread sent without
    // waiting: far past the server's burst of 100 and 50 a second.
    await connected(client("burst"), async (c) => {
      const answers = await Promise.all(Array.from({ length: 150 }, (_, i) => c.ask(element("echo", String(i)))));
      assert.deepEqual(
        answers.map((a) => a.text),
        answers.map((_, i) => String(i)),
      );
      const thread = answers[0].thread;
      for (let i = 0; i < 150; i++) await c.send(element("echo", `more ${i}`), { thread });
      const texts = [];
      for await (const frame of c.thread(thread, { untilFinal: false, timeout: 10_000 })) {
        texts.push(frame.text);
        if (texts.length === 150) break;
      }
      assert.deepEqual(
        texts,
        texts.map((_, i) => `more ${i}`),
      );
      assert.ok(c.connected);
      assert.deepEqual([c.logins, c.resumes], [1, 0]);
    });
  });

  test("without the limiter the same burst is cut off", async () => {
    // The control: the server does close a connection that sends so.
    await connected(client("burst-unlimited", { rateLimit: null }), async (c) => {
      const { thread } = await c.ask("<echo>first</echo>");
      const flood = async () => {
        for (let i = 0; i < 150; i++) await c.send(element("echo", `more ${i}`), { thread });
        for await (const _ of c.thread(thread, { untilFinal: false, timeout: 10_000 }));
      };
      await assert.rejects(flood(), Flooding);
    });
  });

  test("refused messages stay within the bad-message limit", async () => {
    // 24 refusals: past the 20 within 10 s the server tolerates.
    await connected(client("bad"), async (c) => {
      for (let i = 0; i < 24; i++) await assert.rejects(c.ask("<secret/>"), AccessDenied);
      assert.equal((await c.ask("<echo>fine</echo>")).text, "fine");
      assert.equal(c.resumes, 0);
    });
  });

  test("without the limiter refusals are cut off", async () => {
    await connected(client("bad-unlimited", { rateLimit: null }), async (c) => {
      const refusals = async () => {
        for (let i = 0; i < 24; i++) {
          try {
            await c.ask("<secret/>");
          } catch (error) {
            if (!(error instanceof AccessDenied)) throw error;
          }
        }
      };
      await assert.rejects(refusals(), Flooding);
    });
  });
});

describe("signed commands", () => {
  test("a signed command is applied once", async () => {
    assert.ok(COMMANDS, "AGENTSERVER_COMMANDS is not set");
    const file = path.join(COMMANDS, "twin.xml");
    await connected(client("owner"), async (c) => {
      assert.ok(!c.catalog.has("twin"));
      const result = await c.applyFile(file);
      assert.ok(result.applied);
      assert.equal(result.id, "register-twin");
      const catalog = await c.waitForCatalog((catalog) => catalog.has("twin"));
      assert.equal(catalog.agent("twin"), "twin");
      assert.equal((await c.ask("<twin>hello</twin>")).payload, "<echoed>hello</echoed>");
      // The id is used: the same command again is refused, and says why.
      await assert.rejects(c.applyFile(file), (error) => {
        assert.ok(error instanceof CommandRefused);
        assert.equal(error.commandId, "register-twin");
        assert.match(error.reason, /already/);
        return true;
      });
    });
  });
});
