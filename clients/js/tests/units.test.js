// The client's parts on their own, without a server: TOTP codes against
// RFC 6238's test vectors, base32, the XML reader, error frames, envelopes
// and catalogs as the server writes them, the rate limiter and the TOTP
// step record on fake clocks.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  AccessDenied,
  AgentFailed,
  AgentServerError,
  Answer,
  Client,
  Envelope,
  FramesDropped,
  PrivilegedResult,
  RateLimit,
  Totp,
  TotpSteps,
  XmlError,
  commandId,
  decodeBase32,
  element,
  errorFromFrame,
  escapeAttribute,
  parseCatalog,
  parseFragment,
  parseXml,
} from "../index.js";
import { Limiter } from "../limits.js";

describe("TOTP", () => {
  // RFC 6238, appendix B: the SHA-1 secret "12345678901234567890".
  const secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
  const vectors = [
    [59, "287082"],
    [1111111109, "081804"],
    [1111111111, "050471"],
    [1234567890, "005924"],
    [2000000000, "279037"],
    [20000000000, "353130"],
  ];
  for (const [time, code] of vectors) {
    test(`the code at ${time} is ${code}`, async () => {
      assert.equal(await new Totp(secret).at(time), code);
    });
  }

  test("base32 ignores case, spaces and padding, and refuses other characters", () => {
    assert.deepEqual([...decodeBase32("mzxw 6===")], [...new TextEncoder().encode("foo")]);
    assert.throws(() => decodeBase32("MZXW1"), /unexpected "1"/);
    assert.throws(() => new Totp(""), /empty/);
  });

  test("steps are handed out once per server and user", () => {
    let clock = 30 * 1000 + 12;
    const steps = new TotpSteps(() => clock);
    assert.deepEqual(steps.reserve("s", "u"), { step: 1000, waitMs: 0 });
    // The same step again: wait for the next one (18 s away).
    const second = steps.reserve("s", "u");
    assert.equal(second.step, 1001);
    assert.ok(Math.abs(second.waitMs - 18_000) < 1, String(second.waitMs));
    // Another user, or another server, has steps of its own.
    assert.equal(steps.reserve("s", "v").step, 1000);
    assert.equal(steps.reserve("t", "u").step, 1000);
    clock += 100;
    assert.deepEqual(steps.reserve("s", "u"), { step: 1003, waitMs: 0 });
    assert.equal(steps.used("s", "u"), 1003);
  });
});

describe("XML", () => {
  test("canonical frames are read with their offsets", () => {
    const frame = '<message><meta><from>calc</from><thread>t-1</thread></meta><result a="x &amp; y">14</result></message>';
    const root = parseXml(frame);
    assert.equal(root.name, "message");
    const result = /** @type {import("../xml.js").XmlElement} */ (root.elements()[1]);
    assert.equal(frame.slice(result.start, result.end), '<result a="x &amp; y">14</result>');
    assert.equal(result.get("a"), "x & y");
    assert.equal(root.find("meta")?.find("thread")?.text, "t-1");
  });

  test("references, CDATA and comments", () => {
    const root = parseXml('<?xml version="1.0"?><!-- hi --><a>&lt;&#65;&#x42;<![CDATA[<c>]]><b/>x</a>');
    assert.equal(root.text, "<AB<c>x");
    assert.equal(root.elements("b").length, 1);
  });

  test("what is not XML is refused", () => {
    for (const bad of ["<a>", "<a></b>", "<a>fish & chips</a>", "<!DOCTYPE a><a/>", "<a/><b/>", "text", "<a x=1/>", "<a x='1' x='2'/>"]) {
      assert.throws(() => parseXml(bad), XmlError, bad);
    }
  });

  test("fragments hold text and elements", () => {
    const nodes = parseFragment("<n>3</n> and <n>4</n>");
    assert.equal(nodes.length, 3);
    assert.equal(nodes[1], " and ");
  });

  test("escaping", () => {
    assert.equal(element("calculate", "2 < 3 & 4 > 1"), "<calculate>2 &lt; 3 &amp; 4 &gt; 1</calculate>");
    assert.equal(element("hold", "", { ms: 50 }), '<hold ms="50"></hold>');
    assert.equal(escapeAttribute('a"b<'), "a&quot;b&lt;");
  });
});

describe("frames", () => {
  test("an envelope keeps its payload as received, and its repair notes", () => {
    const frame =
      "<message><meta><from>echo</from><thread>t</thread><huh>escaped a bare &amp;</huh></meta><echoed>fish &amp; chips</echoed></message>";
    const envelope = Envelope.parse(frame);
    assert.equal(envelope.sender, "echo");
    assert.equal(envelope.payload, "<echoed>fish &amp; chips</echoed>");
    assert.equal(envelope.text, "fish & chips");
    assert.equal(envelope.tag, "echoed");
    assert.deepEqual(envelope.huh, ["escaped a bare &"]);
    assert.throws(() => Envelope.parse("<message><meta></meta><a/></message>"), TypeError);
  });

  test("an answer's final frame is the first that is not a stream frame", () => {
    const parts = ["<partial>a</partial>", "<partial>b</partial>", "<answer>ab</answer>", "<extra/>"].map(
      (payload) => new Envelope("llm", "t", payload),
    );
    const answer = new Answer("t", parts);
    assert.equal(answer.tag, "answer");
    assert.equal(answer.partials.length, 2);
    assert.equal(answer.text, "ab");
  });

  test("a catalog", () => {
    const { catalog, token } = parseCatalog(
      '<catalog resume-token="tok" session="s" session-timeout="1800" user="u"><capability agent="calc" tag="calculate">Evaluates.</capability></catalog>',
    );
    assert.equal(token, "tok");
    assert.equal(catalog.sessionTimeout, 1800);
    assert.equal(catalog.agent("calculate"), "calc");
    assert.ok(catalog.has("calculate") && !catalog.has("echo"));
    assert.equal(catalog.capabilities[0]?.description, "Evaluates.");
  });

  test("error frames become their classes", () => {
    const denied = errorFromFrame('<access-denied tag="secret"></access-denied>');
    assert.ok(denied instanceof AccessDenied && denied instanceof AgentServerError);
    assert.equal(denied.tag, "secret");
    const failed = errorFromFrame('<error agent="calc" code="agent-failed" thread="t">trapped</error>');
    assert.ok(failed instanceof AgentFailed);
    assert.deepEqual([failed.agent, failed.thread, failed.reason], ["calc", "t", "trapped"]);
    assert.match(failed.message, /agent-failed, agent calc, thread t: trapped/);
    const dropped = errorFromFrame('<error code="frames-dropped" count="7"></error>');
    assert.ok(dropped instanceof FramesDropped);
    assert.equal(/** @type {FramesDropped} */ (dropped).count, 7);
    const future = errorFromFrame('<error code="something-new">?</error>');
    assert.equal(future.constructor, AgentServerError);
    assert.equal(future.code, "something-new");
    assert.throws(() => errorFromFrame("<result/>"), TypeError);
  });

  test("privileged results and command ids", () => {
    const refused = PrivilegedResult.parse('<privileged-result id="c1" status="refused">already used</privileged-result>');
    assert.equal(refused.applied, false);
    assert.equal(refused.reason, "already used");
    assert.equal(commandId('<privileged-command><payload id="c9"/></privileged-command>'), "c9");
    assert.equal(commandId("not xml"), null);
  });
});

describe("the rate limiter", () => {
  test("a burst, then the sustained rate", () => {
    let clock = 0;
    const limiter = new Limiter(new RateLimit(), () => clock);
    for (let i = 0; i < 90; i++) assert.equal(limiter.delay(0), 0, `message ${i}`);
    const wait = limiter.delay(0);
    assert.ok(wait > 20 && wait < 25, String(wait)); // 1/45 s
    clock += wait;
    assert.equal(limiter.delay(0), 0);
  });

  test("refusals and messages awaiting their verdict count toward the bad-message limit", () => {
    let clock = 0;
    const limiter = new Limiter(new RateLimit(), () => clock);
    for (let i = 0; i < 17; i++) {
      limiter.recordBad();
      clock += 10;
    }
    assert.equal(limiter.delay(0), 0); // 17 bad + this one = 18
    limiter.recordBad();
    // 18 refused: the next must wait until the first (170 ms ago) ages
    // out of the 10 s window.
    const wait = limiter.delay(0);
    assert.ok(Math.abs(wait - (10_000 - 170)) < 1, String(wait));
    clock += wait;
    assert.equal(limiter.delay(0), 0);
    // An unresolved message counts too.
    const fresh = new Limiter(new RateLimit({ maxBadMessages: 1 }), () => clock);
    assert.ok(fresh.delay(1) > 0);
  });

  test("a server's own limits", () => {
    const limit = RateLimit.forServer(500, 1000);
    assert.equal(limit.messagesPerSecond, 450);
    assert.equal(limit.burst, 900);
  });
});

describe("the client's options", () => {
  test("TLS only, and a secret or a code", () => {
    assert.throws(() => new Client("ws://127.0.0.1:1/", "u", { totpSecret: "MZXW6" }), /wss/);
    assert.throws(() => new Client("wss://127.0.0.1:1/", "u", {}), /totpSecret/);
    const client = new Client("wss://127.0.0.1:1/", "u", { code: "123456" });
    assert.equal(client.connected, false);
    assert.throws(() => client.catalog, /not connected/);
  });

  test("a server that cannot be reached is a ConnectionLost", async () => {
    const client = new Client("wss://127.0.0.1:1/", "u", { totpSecret: "MZXW6", totpSteps: new TotpSteps() });
    await assert.rejects(client.connect(), { name: "ConnectionLost", code: "connection-lost" });
  });
});
