// The fetch-js agent's logic under plain Node: `node --test` (see ../test.sh).
// A fake `fetch` stands in for the engine's, and a list for the host's emit.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Malformed,
  answer,
  describeError,
  escapeAttribute,
  escapeText,
  failedPayload,
  fetchedPayload,
  fetchingPayload,
  parseRequest,
  parseStartTag,
} from './fetch-core.js';

/**
 * A fake `fetch` answering from `responses` (one per call: a Response, or
 * an error to reject with), recording each call's URL and options.
 */
function fakeFetch(...responses) {
  const calls = [];
  const fetch = async (url, options) => {
    calls.push({ url, options });
    const next = responses.length > 1 ? responses.shift() : responses[0];
    if (next instanceof Error) throw next;
    return next;
  };
  return { fetch, calls };
}

/** Runs `answer` with a fake fetch, returning what it emitted and answered. */
async function run(payload, ...responses) {
  const { fetch, calls } = fakeFetch(...responses);
  const emitted = [];
  const answers = await answer(payload, { fetch, emit: (p) => emitted.push(p) });
  return { emitted, answers, calls };
}

function ok(body, status = 200) {
  return new Response(body, { status });
}

async function malformed(payload, pattern) {
  await assert.rejects(
    () => run(payload, ok('never')),
    (error) => error instanceof Malformed && pattern.test(error.message),
    `${payload} should be malformed matching ${pattern}`,
  );
}

describe('answer', () => {
  test('emits <fetching> then answers <fetched> with the escaped body', async () => {
    const { emitted, answers, calls } = await run(
      '<fetch-js url="http://example.test/a?x=1&amp;y=2"></fetch-js>',
      ok('<b>fish & chips</b>\r\n'),
    );
    assert.deepEqual(emitted, ['<fetching n="1" url="http://example.test/a?x=1&amp;y=2"></fetching>']);
    assert.deepEqual(answers, ['<fetched bytes="21" status="200">&lt;b&gt;fish &amp; chips&lt;/b&gt;&#xD;\n</fetched>']);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].url, 'http://example.test/a?x=1&y=2');
    assert.equal(calls[0].options.method, 'GET');
    assert.equal(calls[0].options.redirect, 'manual');
    assert.deepEqual(calls[0].options.headers, []);
  });

  test('counts bytes, not characters, and decodes invalid UTF-8 lossily', async () => {
    const { answers } = await run('<fetch-js url="u"/>', ok('h\u00e9\u{1f600}'));
    assert.deepEqual(answers, ['<fetched bytes="7" status="200">h\u00e9\u{1f600}</fetched>']);
    const bad = await run('<fetch-js url="u"/>', ok(new Uint8Array([0x61, 0xff, 0x62])));
    assert.deepEqual(bad.answers, ['<fetched bytes="3" status="200">a\ufffdb</fetched>']);
  });

  test('answers any status, and an empty body', async () => {
    const { answers } = await run('<fetch-js url="u"/>', ok(null, 404));
    assert.deepEqual(answers, ['<fetched bytes="0" status="404"></fetched>']);
  });

  test('answers <fetch-failed> with the message when fetch rejects', async () => {
    const { emitted, answers } = await run(
      '<fetch-js url="http://denied.test/&quot;x&quot;"/>',
      new TypeError('HttpRequestDenied'),
    );
    assert.deepEqual(emitted, ['<fetching n="1" url="http://denied.test/&quot;x&quot;"></fetching>']);
    assert.deepEqual(answers, ['<fetch-failed url="http://denied.test/&quot;x&quot;">HttpRequestDenied</fetch-failed>']);
  });

  test('answers <fetch-failed> when reading the body fails', async () => {
    const broken = { status: 200, arrayBuffer: async () => { throw new TypeError('connection reset'); } };
    const { answers } = await run('<fetch-js url="u"/>', broken);
    assert.deepEqual(answers, ['<fetch-failed url="u">connection reset</fetch-failed>']);
  });

  test('fetches `times` times, emitting before each request', async () => {
    const { emitted, answers, calls } = await run('<fetch-js url="u" times="3"/>', ok('a'), ok('bb'), ok('c'));
    assert.deepEqual(emitted, [1, 2, 3].map((n) => fetchingPayload(n, 'u')));
    assert.deepEqual(answers, [
      '<fetched bytes="1" status="200">a</fetched>',
      '<fetched bytes="2" status="200">bb</fetched>',
      '<fetched bytes="1" status="200">c</fetched>',
    ]);
    assert.equal(calls.length, 3);
  });

  test('stops at the first failure', async () => {
    const { emitted, answers, calls } = await run(
      '<fetch-js url="u" times="5"/>',
      ok('a'),
      new TypeError('too many requests'),
      ok('never'),
    );
    assert.equal(emitted.length, 2);
    assert.equal(calls.length, 2);
    assert.deepEqual(answers, [
      '<fetched bytes="1" status="200">a</fetched>',
      '<fetch-failed url="u">too many requests</fetch-failed>',
    ]);
  });

  test('times="0" fetches nothing', async () => {
    const { emitted, answers, calls } = await run('<fetch-js url="u" times="0"/>', ok('a'));
    assert.deepEqual([emitted, answers, calls], [[], [], []]);
  });

  test('sends the one header asked for, trimmed', async () => {
    const { calls } = await run('<fetch-js url="u" header=" X-Token :  abc: d "/>', ok(''));
    assert.deepEqual(calls[0].options.headers, [['X-Token', 'abc: d']]);
    const bare = await run('<fetch-js url="u" header="x-empty"/>', ok(''));
    assert.deepEqual(bare.calls[0].options.headers, [['x-empty', '']]);
  });

  test('refuses a payload without a url, or with a bad times', async () => {
    await malformed('<fetch-js/>', /^<fetch-js> needs a url attribute$/);
    await malformed('<fetch-js href="u"></fetch-js>', /needs a url attribute/);
    await malformed('<fetch-js url="u" times="two"/>', /^times must be a number$/);
    await malformed('<fetch-js url="u" times="-1"/>', /times must be a number/);
    await malformed('<fetch-js url="u" times="4294967296"/>', /times must be a number/);
    await malformed('<fetch-js url="u" times=""/>', /times must be a number/);
  });

  test('refuses what is not one element', async () => {
    await malformed('fetch', /expected "<" at offset 0/);
    await malformed('<fetch-js url="u">', /to end with/);
    await malformed('<fetch-js url="u"></fetch>', /to end with/);
    await malformed('<fetch-js url=u/>', /expected ="…" after attribute url/);
    await malformed('<fetch-js url="u" url="v"/>', /duplicate attribute url/);
    await malformed('<fetch-js url="a&b"/>', /unterminated reference/);
  });
});

describe('parsing', () => {
  test('reads attributes, unescaped, whatever the root is called', () => {
    const { name, attributes } = parseStartTag('<f:fetch xmlns:f="urn:x" url=\'a&lt;&#x9;\' times="2">ignored <b/></f:fetch>');
    assert.equal(name, 'f:fetch');
    assert.deepEqual([...attributes], [['xmlns:f', 'urn:x'], ['url', 'a<\t'], ['times', '2']]);
    assert.deepEqual(parseRequest('<fetch url="u" times="+7" other="x"/>'), { url: 'u', times: 7, headers: [] });
  });
});

describe('payloads', () => {
  test('escape their text and attributes as canonical XML does', () => {
    assert.equal(escapeText('a&b<c>d"e\rf\tg'), 'a&amp;b&lt;c&gt;d"e&#xD;f\tg');
    assert.equal(escapeAttribute('a&b<c>d"e\rf\tg\nh'), 'a&amp;b&lt;c>d&quot;e&#xD;f&#x9;g&#xA;h');
    assert.equal(fetchingPayload(2, 'a"b'), '<fetching n="2" url="a&quot;b"></fetching>');
    assert.equal(fetchedPayload(201, 3, '<x>'), '<fetched bytes="3" status="201">&lt;x&gt;</fetched>');
    assert.equal(failedPayload('u&', 'a<b'), '<fetch-failed url="u&amp;">a&lt;b</fetch-failed>');
  });

  test('a failure says its message and its cause', () => {
    assert.equal(describeError(new TypeError('fetch failed')), 'fetch failed');
    assert.equal(
      describeError(new TypeError('fetch failed', { cause: new Error('HttpRequestDenied') })),
      'fetch failed: HttpRequestDenied',
    );
    assert.equal(describeError('plain'), 'plain');
    assert.equal(
      describeError(new TypeError('fetch_https: An error occurred while using the host API.\n')),
      'fetch_https: An error occurred while using the host API.',
    );
    assert.equal(describeError(new TypeError('')), 'TypeError');
  });
});
