// The fetch-js agent's logic, free of anything component-specific so that
// plain Node can test it (`fetch-core.test.js`): the `fetch` function and
// the `emit` function are parameters, which the component fills with the
// engine's own `fetch()` (over wasi:http) and the host's `emit` import.
//
// It does what the Rust `fetch` agent (example-agents/fetch) does:
// `<fetch-js url="…"/>` → emits `<fetching n="1" url="…"></fetching>`, then
// answers `<fetched bytes="N" status="200">body</fetched>`, or
// `<fetch-failed url="…">why</fetch-failed>` when the request fails.
// `times="N"` fetches N times (stopping at the first failure);
// `header="name: value"` sends one header of the agent's own.

/** The payload is not what the agent understands (the WIT `malformed`). */
export class Malformed extends Error {
  constructor(message) {
    super(message);
    this.name = 'Malformed';
  }
}

/** An XML name, a little looser than the spec (the host checked it). */
const NAME = /^[A-Za-z_:\u00C0-\u{EFFFF}][-.0-9A-Za-z_:\u00B7\u00C0-\u{EFFFF}]*/u;
const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
/** The largest `times` (a WIT u32 in the Rust agent). */
const MAX_TIMES = 0xffffffff;

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
 * Reads the root element's name and attributes: `{ name, attributes:
 * Map<name, value> }`, values unescaped. The content, if any, is not read
 * (the agent needs none; the host delivers only well-formed payloads), but
 * the element must be closed by its own end tag. Throws `Malformed`.
 */
export function parseStartTag(payload) {
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
    const quote = payload[at + 1];
    if (payload[at] !== '=' || (quote !== '"' && quote !== "'")) {
      fail(`expected ="…" after attribute ${attr}`);
    }
    at += 2;
    const end = payload.indexOf(quote, at);
    if (end < 0) fail(`unterminated value of attribute ${attr}`);
    const raw = payload.slice(at, end);
    if (raw.includes('<')) fail(`"<" in the value of attribute ${attr}`);
    if (attributes.has(attr)) fail(`duplicate attribute ${attr}`);
    attributes.set(attr, unescapeXml(raw));
    at = end + 1;
  }
  const rest = payload.slice(at).trimEnd();
  if (rest !== '/>' && !(rest.startsWith('>') && rest.endsWith(`</${name}>`))) {
    fail(`expected the element to end with "/>" or </${name}>`);
  }
  return { name, attributes };
}

/**
 * What one payload asks for: `{ url, times, headers }`, `headers` a list of
 * `[name, value]` pairs (none or one). Throws `Malformed` when the payload
 * has no `url` or a `times` that is not a number. Like the Rust agent it
 * ignores the root's name (it is the tag the agent listens to) and any other
 * attribute.
 */
export function parseRequest(payload) {
  const { name, attributes } = parseStartTag(payload);
  const url = attributes.get('url');
  if (url === undefined) {
    throw new Malformed(`<${name}> needs a url attribute`);
  }
  let times = 1;
  if (attributes.has('times')) {
    const text = attributes.get('times');
    times = /^\+?[0-9]+$/.test(text) ? Number(text.replace(/^\+/, '')) : NaN;
    if (!(times <= MAX_TIMES)) throw new Malformed('times must be a number');
  }
  const headers = [];
  if (attributes.has('header')) {
    const header = attributes.get('header');
    const colon = header.indexOf(':');
    const [hname, value] = colon < 0 ? [header, ''] : [header.slice(0, colon), header.slice(colon + 1)];
    headers.push([hname.trim(), value.trim()]);
  }
  return { url, times, headers };
}

/** The progress payload emitted before request `n`. */
export function fetchingPayload(n, url) {
  return `<fetching n="${n}" url="${escapeAttribute(url)}"></fetching>`;
}

/** The answer for one response: its status, its size in bytes and its text. */
export function fetchedPayload(status, bytes, body) {
  return `<fetched bytes="${bytes}" status="${status}">${escapeText(body)}</fetched>`;
}

/** The answer for a request that failed, saying why. */
export function failedPayload(url, message) {
  return `<fetch-failed url="${escapeAttribute(url)}">${escapeText(message)}</fetch-failed>`;
}

/**
 * What a rejected `fetch()` says: its message (trimmed), followed by its
 * `cause` when there is one. StarlingMonkey's messages are generic: it drops
 * the wasi:http error code, so a request the host refuses (HttpRequestDenied,
 * DestinationIpProhibited, a request limit) or that fails on the way reads
 * "NetworkError when attempting to fetch resource", and one that
 * outgoing-handler refuses outright "fetch_https: An error occurred while
 * using the host API."
 */
export function describeError(error) {
  const text = (e) =>
    (e instanceof Error || typeof e?.message === 'string' ? e.message : String(e)).trim();
  let message = text(error);
  const cause = error?.cause;
  if (cause !== undefined && cause !== null) {
    const more = text(cause);
    if (more && more !== message) message = message ? `${message}: ${more}` : more;
  }
  return message || String(error?.name ?? 'fetch failed');
}

/**
 * Answers one payload: for each of the `times` requests, emits the progress
 * payload, then GETs the URL with `fetchImpl` (the `fetch` signature; no
 * redirect is followed, as the Rust agent's client follows none) and reads
 * the whole body. Returns the answers: one `<fetched>` per response, and a
 * final `<fetch-failed>` if a request failed (no request follows it).
 * Throws `Malformed` for a payload it does not understand.
 */
export async function answer(payload, { fetch: fetchImpl, emit }) {
  const { url, times, headers } = parseRequest(payload);
  const answers = [];
  for (let n = 1; n <= times; n++) {
    emit(fetchingPayload(n, url));
    let response;
    let bytes;
    try {
      response = await fetchImpl(url, { method: 'GET', headers, redirect: 'manual' });
      bytes = new Uint8Array(await response.arrayBuffer());
    } catch (error) {
      answers.push(failedPayload(url, describeError(error)));
      break;
    }
    // Invalid UTF-8 becomes U+FFFD, as Rust's `from_utf8_lossy` does.
    const body = new TextDecoder('utf-8').decode(bytes);
    answers.push(fetchedPayload(response.status, bytes.length, body));
  }
  return answers;
}
