// The sort agent's logic, free of anything component-specific so that plain
// Node can test it (`sort-core.test.js`).
//
// A payload arrives in exclusive canonical form: one element, attributes in
// double quotes, text escaped as `&amp; &lt; &gt; &#xD;`, attribute values
// as `&amp; &lt; &quot; &#x9; &#xA; &#xD;`, no comments, no CDATA, empty
// elements written as start/end pairs. The parser below reads exactly that
// shape (and a little more: any character reference, `&apos;`, `<sort/>`)
// and calls anything else malformed.

/** The payload is not what the agent understands (the WIT `malformed`). */
export class Malformed extends Error {
  constructor(message) {
    super(message);
    this.name = 'Malformed';
  }
}

/** XML whitespace: what separates words. */
const SPACE = /[ \t\r\n]+/;
/** An XML name, a little looser than the spec (the host checked it). */
const NAME = /^[A-Za-z_:\u00C0-\u{EFFFF}][-.0-9A-Za-z_:\u00B7\u00C0-\u{EFFFF}]*/u;
const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Resolves the five predefined entities and character references. */
export function unescapeXml(text) {
  return text.replace(/&([^;&<]*);?/g, (whole, ref) => {
    if (!whole.endsWith(';')) {
      throw new Malformed(`unterminated reference "${whole}"`);
    }
    if (Object.hasOwn(ENTITIES, ref)) {
      return ENTITIES[ref];
    }
    const hex = /^#x([0-9A-Fa-f]{1,6})$/.exec(ref);
    const dec = /^#([0-9]{1,7})$/.exec(ref);
    const code = hex ? parseInt(hex[1], 16) : dec ? parseInt(dec[1], 10) : NaN;
    if (!(code > 0 && code <= 0x10ffff) || (code >= 0xd800 && code <= 0xdfff)) {
      throw new Malformed(`unknown reference "${whole}"`);
    }
    return String.fromCodePoint(code);
  });
}

/** Escapes text content as exclusive canonical XML does. */
export function escapeText(text) {
  return text.replace(/[&<>\r]/g, (c) =>
    c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&#xD;',
  );
}

/** Escapes an attribute value as exclusive canonical XML does. */
export function escapeAttribute(value) {
  const map = { '&': '&amp;', '<': '&lt;', '"': '&quot;', '\t': '&#x9;', '\n': '&#xA;', '\r': '&#xD;' };
  return value.replace(/[&<"\t\n\r]/g, (c) => map[c]);
}

/**
 * Parses one element holding only text:
 * `{ name, attributes: Map<name, value>, text }` with values and text
 * unescaped. Throws `Malformed` for anything else.
 */
export function parseTextElement(payload) {
  let at = 0;
  const fail = (what) => {
    throw new Malformed(`${what} at offset ${at}`);
  };
  if (payload[at] !== '<') fail('expected "<"');
  at += 1;
  const name = NAME.exec(payload.slice(at))?.[0];
  if (!name) fail('expected an element name');
  at += name.length;

  const attributes = new Map();
  for (;;) {
    const space = /^[ \t\r\n]*/.exec(payload.slice(at))[0];
    at += space.length;
    if (payload.startsWith('>', at) || payload.startsWith('/>', at)) break;
    if (!space) fail('expected whitespace, ">" or "/>"');
    const attr = NAME.exec(payload.slice(at))?.[0];
    if (!attr) fail('expected an attribute name');
    at += attr.length;
    if (!payload.startsWith('="', at)) fail(`expected ="…" after attribute ${attr}`);
    at += 2;
    const end = payload.indexOf('"', at);
    if (end < 0) fail(`unterminated value of attribute ${attr}`);
    const raw = payload.slice(at, end);
    if (raw.includes('<')) fail(`"<" in the value of attribute ${attr}`);
    if (attributes.has(attr)) fail(`duplicate attribute ${attr}`);
    attributes.set(attr, unescapeXml(raw));
    at = end + 1;
  }

  if (payload.startsWith('/>', at)) {
    at += 2;
    if (at !== payload.length) fail('content after the element');
    return { name, attributes, text: '' };
  }
  at += 1; // '>'
  const close = `</${name}>`;
  const lt = payload.indexOf('<', at);
  if (lt < 0) fail(`missing ${close}`);
  if (!payload.startsWith(close, lt)) {
    const child = NAME.exec(payload.slice(lt + 1))?.[0];
    at = lt;
    if (child) fail(`child element <${child}> where only text is allowed`);
    fail(`unexpected markup where only text is allowed`);
  }
  const text = unescapeXml(payload.slice(at, lt));
  at = lt + close.length;
  if (at !== payload.length) fail('content after the element');
  return { name, attributes, text };
}

/**
 * Compares two strings by Unicode code point. JavaScript's own `<` compares
 * UTF-16 code units, which puts U+E000..U+FFFF after the supplementary
 * planes; shifting the units at the first difference fixes that.
 */
export function compareCodePoints(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800 && y >= 0xd800) {
        x += x >= 0xe000 ? -0x800 : 0x2000;
        y += y >= 0xe000 ? -0x800 : 0x2000;
      }
      return x < y ? -1 : 1;
    }
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** A UTF-16 surrogate: where code-unit and code-point order part. */
const SURROGATE = /[\uD800-\uDFFF]/;

/** Sorts `list` in place by code point, and returns it. */
export function sortCodePoints(list) {
  // Without surrogates, UTF-16 order is code-point order, and the engine's
  // own comparison (native code) costs far less than a JavaScript comparator
  // run by an interpreter — about twenty times less fuel in the component.
  return list.some((word) => SURROGATE.test(word)) ? list.sort(compareCodePoints) : list.sort();
}

/**
 * The collation this engine offers: `{ name: 'intl', sort }` when
 * `Intl.Collator` exists and works, `{ name: 'codepoint', sort }`
 * otherwise; `sort(list)` sorts in place, ascending, and returns the list.
 * Ties under the collator (canonically equivalent strings) fall back to
 * code-point order, so that the output never depends on the input order.
 * (StarlingMonkey, the engine componentize-js embeds, has no Intl.)
 */
export function makeCollation(intl = globalThis.Intl) {
  try {
    if (intl && typeof intl.Collator === 'function') {
      const collator = new intl.Collator('en');
      if (collator.compare('a', 'B') < 0) {
        const compare = (a, b) => collator.compare(a, b) || compareCodePoints(a, b);
        return { name: 'intl', sort: (list) => list.sort(compare) };
      }
    }
  } catch {
    // No usable Intl: fall through to code points.
  }
  return { name: 'codepoint', sort: sortCodePoints };
}

/** The words of `text`, split on XML whitespace. */
export function words(text) {
  return text.split(SPACE).filter((w) => w !== '');
}

/**
 * Answers one `<sort>` payload with its `<sorted>` payload. Throws
 * `Malformed` when the payload is not `<sort order="asc|desc">words</sort>`.
 */
export function sortPayload(payload, collation) {
  const { name, attributes, text } = parseTextElement(payload);
  const local = name.slice(name.indexOf(':') + 1);
  if (local !== 'sort') {
    throw new Malformed(`expected a <sort> element, got <${name}>`);
  }
  let order = 'asc';
  for (const [attr, value] of attributes) {
    if (attr === 'xmlns' || attr.startsWith('xmlns:')) continue;
    if (attr !== 'order') {
      throw new Malformed(`unknown attribute ${attr}; <sort> takes only order="asc|desc"`);
    }
    if (value !== 'asc' && value !== 'desc') {
      throw new Malformed(`order must be "asc" or "desc", not "${value}"`);
    }
    order = value;
  }
  // The order is total (equal means identical), so reversing the ascending
  // order is the descending order.
  const sorted = collation.sort(words(text));
  if (order === 'desc') sorted.reverse();
  // Words hold no whitespace: escaping them joined is escaping each.
  const body = escapeText(sorted.join(' '));
  return `<sorted collation="${escapeAttribute(collation.name)}">${body}</sorted>`;
}
