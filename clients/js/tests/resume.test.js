// The client after a dropped connection, against the real server over
// TLS: it resumes with the token, without a new TOTP code, and gets the
// frames the server kept meanwhile, in order; when the session is gone, it
// logs in again, in a fresh TOTP time step. `tests/js_client.rs` starts the
// server (hostile, counter, echo; sessions outlive their socket by 3 s)
// and runs this file.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { SessionLost } from "../index.js";
import { client, connected, relay, sleep } from "./support.js";

/** The server's session_timeout in this run, milliseconds. */
const SESSION_TIMEOUT = 3000;

describe("resume", () => {
  test("a socket cut by the network resumes with the frames kept meanwhile", async () => {
    const network = await relay();
    const statuses = [];
    // Reconnecting only after 1 s, while both answers are produced.
    const c = client("resumer", {
      url: network.url,
      reconnectDelay: 1000,
      onStatus: (status) => statuses.push(status),
    });
    try {
      await connected(c, async () => {
        const session = c.sessionId;
        const { thread } = await c.ask('<hold ms="10"/>');
        // Two messages on one thread: delivered one after the other, the
        // count once the hold is over.
        await c.send('<hold ms="300"/>', { thread });
        await c.send("<count/>", { thread });
        await sleep(100);
        assert.equal(network.cut(), 2);
        const frames = [];
        for await (const frame of c.thread(thread, { untilFinal: false, timeout: 5000 })) {
          frames.push(frame);
          if (frames.length === 2) break;
        }
        assert.deepEqual(
          frames.map((f) => f.payload),
          ["<held></held>", "<count-is>1</count-is>"],
        );
        assert.ok(
          frames.every((f) => f.resumed),
          "both came with the resume",
        );
        const catalog = await c.waitForCatalog((catalog) => catalog.resumed, { timeout: 5000 });
        assert.equal(catalog.session, session);
        assert.deepEqual([c.logins, c.resumes], [1, 1]);
        assert.deepEqual(statuses, ["connecting", "connected", "reconnecting", "resumed"]);
        // The session goes on: its thread, and its agent's state.
        const again = await c.ask("<count/>", { thread });
        assert.equal(again.payload, "<count-is>2</count-is>");
        assert.equal(again.final.resumed, false);
      });
    } finally {
      network.close();
    }
  });

  test("an ask in flight is answered across a socket closed under it", async () => {
    await connected(client("in-flight", { reconnectDelay: 800 }), async (c) => {
      const answer = c.ask('<hold ms="400"/>');
      await sleep(150);
      // What a page does when its socket is closed under it.
      c.websocket?.close();
      const held = await answer;
      assert.equal(held.payload, "<held></held>");
      assert.equal(held.final.resumed, true);
      assert.deepEqual([c.logins, c.resumes], [1, 1]);
      assert.equal((await c.ask("<echo>after</echo>")).text, "after");
    });
  });

  test("a lost session logs in again in a fresh time step", async () => {
    // Start early in a time step, so that the second login falls in the
    // same one unless the client waits for the next.
    const intoStep = (Date.now() / 1000) % 30;
    if (intoStep > 15) await sleep((30 - intoStep + 0.5) * 1000);
    const network = await relay();
    // One attempt only: the wait must be right the first time.
    const c = client("relogin", { url: network.url, reconnectDelay: SESSION_TIMEOUT + 1500, loginAttempts: 1 });
    try {
      await connected(c, async () => {
        const step = Math.floor(Date.now() / 30_000);
        const session = c.sessionId;
        const question = c.ask('<hold ms="200"/>', { timeout: 90_000 });
        await sleep(50);
        network.cut();
        // The session expires while the client waits; its question goes
        // with it.
        await assert.rejects(question, SessionLost);
        const answer = await c.ask("<echo>new session</echo>", { timeout: 60_000 });
        assert.equal(answer.text, "new session");
        assert.notEqual(c.sessionId, session);
        assert.equal(c.logins, 2);
        assert.ok(Math.floor(Date.now() / 30_000) > step);
      });
    } finally {
      network.close();
    }
  });
});
