// The fetch-js agent: the Rust `fetch` agent in JavaScript, with the
// standard `fetch()`. `<fetch-js url="https://…"/>` emits
// `<fetching n="1" url="…"></fetching>` at once, then answers
// `<fetched bytes="N" status="200">body</fetched>`, or
// `<fetch-failed url="…">why</fetch-failed>` when the host refuses the
// request (a host the grant does not name: HttpRequestDenied) or it fails.
//
// Built by `build.mjs` for the world named in this folder's `world` file,
// `agent-http`, with componentize-js's `http` feature on: its `fetch()` runs
// over the `wasi:http/outgoing-handler` import, which the host serves only
// to an agent with an HTTP grant. The logic lives in `fetch-core.js`, which
// plain Node tests.

import { emit } from 'agentserver:agent/host@0.2.0';
import { Malformed, answer } from './fetch-core.js';

/**
 * The world's `handle` export. It is async: componentize-js 0.23 runs the
 * engine's event loop until the returned promise settles (the `fetch()`
 * responses arrive through it), so the component's export stays
 * synchronous. A fulfilled list is `ok`; a rejection with an own `payload`
 * is `err` with that payload, the variant `failure` as `{ tag, val }`.
 */
export async function handle(msg) {
  try {
    return await answer(msg.payload, { fetch, emit });
  } catch (error) {
    if (error instanceof Malformed) {
      throw { payload: { tag: 'malformed', val: error.message } };
    }
    throw { payload: { tag: 'internal', val: String(error?.message ?? error) } };
  }
}
