// What the tests against a real server share: where the server is and who
// may log in, from the environment the harness sets (`tests/js_client.rs`
// in the repository):
//
// - AGENTSERVER_URL: wss://127.0.0.1:PORT/
// - AGENTSERVER_USERS: JSON, {"user": "BASE32 TOTP SECRET", …}
// - AGENTSERVER_COMMANDS: a folder of signed commands (optional)
// - AGENTSERVER_LLM_ENDPOINT: the mock model server (optional)
// - NODE_EXTRA_CA_CERTS: the server's development certificate, which
//   Node's WebSocket then trusts.
//
// Each test logs in as users of its own: the server accepts one login per
// user and TOTP time step.

import net from "node:net";

import { Client } from "../index.js";

export const SERVER = process.env.AGENTSERVER_URL ?? "";
/** @type {Record<string, string>} */
export const USERS = JSON.parse(process.env.AGENTSERVER_USERS ?? "{}");
export const COMMANDS = process.env.AGENTSERVER_COMMANDS ?? "";
export const LLM_ENDPOINT = process.env.AGENTSERVER_LLM_ENDPOINT ?? "";

const taken = new Set();

/**
 * Claims user `name` for one test (each user logs in once).
 *
 * @param {string} name
 */
export function user(name) {
  if (!SERVER) throw new Error("AGENTSERVER_URL is not set: run through `cargo test --test js_client`");
  if (!Object.hasOwn(USERS, name)) throw new Error(`no user ${name} on this server (AGENTSERVER_USERS)`);
  if (taken.has(name)) throw new Error(`user ${name} is used by two tests`);
  taken.add(name);
  return name;
}

/**
 * A client of the test server (or of `options.url`) as `name`, not yet
 * connected.
 *
 * @param {string} name
 * @param {import("../client.js").ClientOptions & { url?: string }} [options]
 */
export function client(name, options = {}) {
  const { url = SERVER, ...rest } = options;
  return new Client(url, user(name), { totpSecret: USERS[name], ...rest });
}

/**
 * Connects `c`, runs `body` with it, and closes it (ending the session)
 * whatever happens.
 *
 * @template T
 * @param {Client} c
 * @param {(c: Client) => Promise<T>} body
 * @returns {Promise<T>}
 */
export async function connected(c, body) {
  await c.connect();
  try {
    return await body(c);
  } finally {
    await c.close();
  }
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A TCP relay in front of the server, whose connections can be cut as a
 * failing network cuts them: no close frame, no goodbye, a reset on both
 * sides. TLS passes through it untouched.
 *
 * @returns {Promise<{ url: string, cut: () => number, close: () => void }>}
 */
export async function relay() {
  const target = new URL(SERVER);
  /** @type {Set<net.Socket>} */
  const sockets = new Set();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(Number(target.port), target.hostname);
    sockets.add(inbound).add(outbound);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const end = () => {
      inbound.destroy();
      outbound.destroy();
      sockets.delete(inbound);
      sockets.delete(outbound);
    };
    for (const socket of [inbound, outbound]) {
      socket.on("error", end);
      socket.on("close", end);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const address = /** @type {net.AddressInfo} */ (server.address());
  const cut = () => {
    const count = sockets.size;
    for (const socket of [...sockets]) socket.resetAndDestroy();
    return count;
  };
  return {
    url: `wss://127.0.0.1:${address.port}/`,
    cut,
    close: () => {
      cut();
      server.close();
    },
  };
}
