// The sort agent: `<sort order="asc|desc">words…</sort>` →
// `<sorted collation="intl|codepoint">words in order</sorted>`.
//
// Built into a component by `build.mjs` with componentize-js; the logic
// lives in `sort-core.js`, which plain Node tests.

import { Malformed, makeCollation, sortPayload } from './sort-core.js';

// Chosen once, while componentize-js pre-initializes the engine: the
// snapshot already holds the collator, so no call pays for it. (In the
// component it is code-point order: StarlingMonkey is built without Intl.)
const collation = makeCollation();

/**
 * The world's `handle` export. componentize-js 0.23 maps its
 * `result<list<string>, failure>` so: a returned value is `ok` (unless it is
 * itself `{ tag: 'ok' | 'err', val }`), a thrown value with an own `payload`
 * is `err` with that payload — here the variant `failure` as `{ tag, val }`
 * — and a thrown `Error` without one traps the call.
 */
export function handle(msg) {
  try {
    return [sortPayload(msg.payload, collation)];
  } catch (error) {
    if (error instanceof Malformed) {
      throw { payload: { tag: 'malformed', val: error.message } };
    }
    throw { payload: { tag: 'internal', val: String(error?.message ?? error) } };
  }
}
