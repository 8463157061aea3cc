// The sort agent's logic under plain Node: `node --test` (see ../test.sh).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Malformed,
  compareCodePoints,
  escapeAttribute,
  escapeText,
  makeCollation,
  parseTextElement,
  sortCodePoints,
  sortPayload,
  unescapeXml,
  words,
} from './sort-core.js';

const codepoint = makeCollation(null); // as in the component: no Intl
const intl = makeCollation(Intl);

function malformed(payload, pattern, collation = codepoint) {
  assert.throws(
    () => sortPayload(payload, collation),
    (error) => error instanceof Malformed && pattern.test(error.message),
    `${payload} should be malformed matching ${pattern}`,
  );
}

describe('collation', () => {
  test('is intl when Intl.Collator works, codepoint when Intl is absent', () => {
    assert.equal(intl.name, 'intl');
    assert.equal(codepoint.name, 'codepoint');
  });

  test('is codepoint when Intl.Collator throws or is not locale-aware', () => {
    const throwing = {
      Collator: function () {
        throw new Error('no data');
      },
    };
    assert.equal(makeCollation(throwing).name, 'codepoint');
    const naive = {
      Collator: function () {
        return { compare: (a, b) => (a < b ? -1 : a > b ? 1 : 0) };
      },
    };
    assert.equal(makeCollation(naive).name, 'codepoint');
  });

  test('code-point order is not UTF-16 order', () => {
    // U+FF21 (fullwidth A) is below U+1F600 (an emoji) by code point, but
    // above its lead surrogate U+D83D by code unit.
    assert.equal(compareCodePoints('\uff21', '\u{1f600}'), -1);
    assert.equal(compareCodePoints('\u{1f600}', '\uff21'), 1);
    assert.equal('\uff21' < '\u{1f600}', false);
    assert.equal(compareCodePoints('a', 'ab'), -1);
    assert.equal(compareCodePoints('ab', 'ab'), 0);
    assert.equal(compareCodePoints('B', 'a'), -1);
  });

  test('the native fast path and the comparator agree', () => {
    const alphabet = ['a', 'B', '\u00e9', '\uff21', '\ue000', '\u{1f600}', '\u{10000}', '&'];
    let seed = 7;
    const pick = () => alphabet[(seed = (seed * 1103515245 + 12345) % 2147483648) % alphabet.length];
    for (const withAstral of [false, true]) {
      const letters = withAstral ? alphabet : alphabet.filter((c) => c.length === 1);
      const list = Array.from({ length: 300 }, () =>
        Array.from({ length: 1 + (seed % 4) }, () => {
          let c = pick();
          while (!letters.includes(c)) c = pick();
          return c;
        }).join(''),
      );
      assert.deepEqual(sortCodePoints([...list]), [...list].sort(compareCodePoints));
    }
  });
});

describe('sortPayload', () => {
  test('sorts ascending by default, by code point without Intl', () => {
    assert.equal(
      sortPayload('<sort>pear Apple banana apple</sort>', codepoint),
      '<sorted collation="codepoint">Apple apple banana pear</sorted>',
    );
  });

  test('sorts ascending and descending with Intl', () => {
    assert.equal(
      sortPayload('<sort order="asc">pear Apple banana apple</sort>', intl),
      '<sorted collation="intl">apple Apple banana pear</sorted>',
    );
    assert.equal(
      sortPayload('<sort order="desc">pear Apple banana apple</sort>', intl),
      '<sorted collation="intl">pear banana Apple apple</sorted>',
    );
    assert.equal(
      sortPayload('<sort>zebra \u00e9clair eclair ecole</sort>', intl),
      '<sorted collation="intl">eclair \u00e9clair ecole zebra</sorted>',
    );
  });

  test('sorts descending by code point', () => {
    assert.equal(
      sortPayload('<sort order="desc">b c a</sort>', codepoint),
      '<sorted collation="codepoint">c b a</sorted>',
    );
  });

  test('splits on any XML whitespace and collapses it', () => {
    assert.equal(
      sortPayload('<sort>\n  b\t\ta &#xD; c  </sort>', codepoint),
      '<sorted collation="codepoint">a b c</sorted>',
    );
    assert.deepEqual(words('  a \n b\r\nc\t'), ['a', 'b', 'c']);
    assert.deepEqual(words(' \n '), []);
  });

  test('keeps duplicates', () => {
    assert.equal(
      sortPayload('<sort>b a b a</sort>', codepoint),
      '<sorted collation="codepoint">a a b b</sorted>',
    );
  });

  test('unescapes its input and escapes its output', () => {
    assert.equal(
      sortPayload('<sort>&lt;b&gt; fish&amp;chips &quot;q&quot; a&#x3C;</sort>', codepoint),
      '<sorted collation="codepoint">"q" &lt;b&gt; a&lt; fish&amp;chips</sorted>',
    );
  });

  test('answers an empty sort with an empty sorted', () => {
    assert.equal(sortPayload('<sort></sort>', codepoint), '<sorted collation="codepoint"></sorted>');
    assert.equal(sortPayload('<sort/>', codepoint), '<sorted collation="codepoint"></sorted>');
    assert.equal(sortPayload('<sort order="desc">   </sort>', codepoint), '<sorted collation="codepoint"></sorted>');
  });

  test('accepts non-ASCII words', () => {
    assert.equal(
      sortPayload('<sort>\u{1f600} \uff21 \u00e4 z</sort>', codepoint),
      '<sorted collation="codepoint">z \u00e4 \uff21 \u{1f600}</sorted>',
    );
  });

  test('ignores namespace declarations and accepts a prefixed sort', () => {
    assert.equal(
      sortPayload('<sort xmlns="urn:x" order="desc">a b</sort>', codepoint),
      '<sorted collation="codepoint">b a</sorted>',
    );
    assert.equal(
      sortPayload('<s:sort xmlns:s="urn:x">b a</s:sort>', codepoint),
      '<sorted collation="codepoint">a b</sorted>',
    );
  });

  test('refuses a bad order', () => {
    malformed('<sort order="sideways">a b</sort>', /^order must be "asc" or "desc", not "sideways"$/);
    malformed('<sort order="ASC">a</sort>', /not "ASC"/);
    malformed('<sort order="">a</sort>', /not ""/);
    malformed('<sort order="&lt;x&quot;">a</sort>', /not "<x""/);
  });

  test('refuses child elements, comments and other markup', () => {
    malformed('<sort>a <b>c</b></sort>', /child element <b> where only text is allowed/);
    malformed('<sort><x:y xmlns:x="urn:x"></x:y></sort>', /child element <x:y>/);
    malformed('<sort>a <!-- c --></sort>', /unexpected markup/);
    malformed('<sort>a <![CDATA[c]]></sort>', /unexpected markup/);
    malformed('<sort>a</sort >', /unexpected markup/);
  });

  test('refuses unknown attributes and other elements', () => {
    malformed('<sort by="length">a</sort>', /unknown attribute by/);
    malformed('<order>a</order>', /expected a <sort> element, got <order>/);
  });

  test('refuses what is not one element', () => {
    malformed('', /expected "<" at offset 0/);
    malformed('sort', /expected "<"/);
    malformed('<sort>a</sort><sort>b</sort>', /content after the element/);
    malformed('<sort>a', /missing <\/sort>/);
    malformed('<sort>a</sorted>', /unexpected markup/);
    malformed('<sort order=asc>a</sort>', /expected ="…" after attribute order/);
    malformed('<sort order="asc>a</sort>', /unterminated value|"<" in the value/);
    malformed('<sort order="asc"order="desc">a</sort>', /expected whitespace/);
    malformed('<sort order="asc" order="desc">a</sort>', /duplicate attribute order/);
    malformed('<sort>fish & chips</sort>', /unterminated reference/);
    malformed('<sort>&nbsp;</sort>', /unknown reference "&nbsp;"/);
    malformed('<sort>&#0;</sort>', /unknown reference/);
    malformed('<sort>&#xD800;</sort>', /unknown reference/);
    malformed('<sort>&#x110000;</sort>', /unknown reference/);
  });
});

describe('escaping', () => {
  test('unescapes the predefined entities and character references', () => {
    assert.equal(unescapeXml('&amp;&lt;&gt;&quot;&apos;&#xD;&#x9;&#10;&#x1F600;'), '&<>"\'\r\t\n\u{1f600}');
    assert.equal(unescapeXml('&amp;lt;'), '&lt;');
  });

  test('escapes text and attribute values as canonical XML does', () => {
    assert.equal(escapeText('a&b<c>d"e\rf\tg'), 'a&amp;b&lt;c&gt;d"e&#xD;f\tg');
    assert.equal(escapeAttribute('a&b<c>d"e\rf\tg\nh'), 'a&amp;b&lt;c>d&quot;e&#xD;f&#x9;g&#xA;h');
  });

  test('round-trips any word through escape and parse', () => {
    for (const word of ['&', '<>', '&amp;', '"\'', '\u{1f600}x']) {
      const { text } = parseTextElement(`<sort>${escapeText(word)}</sort>`);
      assert.equal(text, word);
    }
  });
});
