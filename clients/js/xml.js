/**
 * A small XML reader for the frames the server sends (always in exclusive
 * canonical form), and for checking XML before sending it; and the escaping
 * of text and attribute values. It reads elements, attributes, text,
 * character references and CDATA, and skips comments, processing
 * instructions and the XML declaration; it refuses DTDs, unclosed and
 * mismatched elements, and bare `&` or `<`. Names are kept as written
 * (`prefix:name`); namespaces are not resolved.
 *
 * @module
 */

/** XML that cannot be read. */
export class XmlError extends SyntaxError {
  /**
   * @param {string} message
   * @param {number} at the offset where reading stopped.
   */
  constructor(message, at) {
    super(`${message} (at character ${at})`);
    this.name = "XmlError";
    /** The offset where reading stopped. */
    this.at = at;
  }
}

/** One element: its name, attributes and children. */
export class XmlElement {
  /**
   * @param {string} name the name as written (`prefix:name` if prefixed).
   * @param {Record<string, string>} attributes values unescaped.
   * @param {Array<XmlElement | string>} children elements and text, in order.
   * @param {number} start the element's first character in the source.
   * @param {number} end one past its last character.
   */
  constructor(name, attributes, children, start, end) {
    this.name = name;
    this.attributes = attributes;
    this.children = children;
    this.start = start;
    this.end = end;
  }

  /** The name without its prefix. */
  get localName() {
    const colon = this.name.indexOf(":");
    return colon < 0 ? this.name : this.name.slice(colon + 1);
  }

  /**
   * An attribute's value, or `null`.
   *
   * @param {string} name
   * @returns {string | null}
   */
  get(name) {
    return Object.hasOwn(this.attributes, name) ? this.attributes[name] : null;
  }

  /** The text content, that of child elements included. */
  get text() {
    let text = "";
    for (const child of this.children) text += typeof child === "string" ? child : child.text;
    return text;
  }

  /**
   * The child elements, or those named `name`.
   *
   * @param {string} [name]
   * @returns {XmlElement[]}
   */
  elements(name) {
    /** @type {XmlElement[]} */
    const found = [];
    for (const child of this.children) {
      if (typeof child !== "string" && (name === undefined || child.name === name)) found.push(child);
    }
    return found;
  }

  /**
   * The first child element named `name`, or `null`.
   *
   * @param {string} name
   * @returns {XmlElement | null}
   */
  find(name) {
    for (const child of this.children) {
      if (typeof child !== "string" && child.name === name) return child;
    }
    return null;
  }
}

/**
 * `text` escaped for XML character data (`&`, `<`, `>`).
 *
 * @param {string} text
 * @returns {string}
 */
export function escape(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * `value` escaped for a double-quoted XML attribute.
 *
 * @param {string} value
 * @returns {string}
 */
export function escapeAttribute(value) {
  return escape(value).replace(/"/g, "&quot;");
}

/**
 * An element with its text and attributes escaped:
 * `element("calculate", "2 < 3")` is `<calculate>2 &lt; 3</calculate>`,
 * `element("hold", "", { ms: "50" })` is `<hold ms="50"></hold>`.
 *
 * @param {string} tag
 * @param {string} [text]
 * @param {Record<string, string | number>} [attributes]
 * @returns {string}
 */
export function element(tag, text = "", attributes = {}) {
  let attrs = "";
  for (const [name, value] of Object.entries(attributes)) attrs += ` ${name}="${escapeAttribute(String(value))}"`;
  return `<${tag}${attrs}>${escape(text)}</${tag}>`;
}

const NAMED = /** @type {Record<string, string>} */ ({ lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" });
const REFERENCE = /&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g;
const NAME_END = /[\s/>=<]/;

/**
 * Reads one document: one root element, with white space, comments,
 * processing instructions and the XML declaration around it.
 *
 * @param {string} text
 * @returns {XmlElement}
 * @throws {XmlError}
 */
export function parseXml(text) {
  const reader = new Reader(text);
  const nodes = reader.content(null);
  /** @type {XmlElement | null} */
  let root = null;
  for (const node of nodes) {
    if (typeof node === "string") {
      if (node.trim()) throw new XmlError("text outside the root element", 0);
    } else if (root) {
      throw new XmlError("more than one root element", node.start);
    } else {
      root = node;
    }
  }
  if (!root) throw new XmlError("no element", text.length);
  return root;
}

/**
 * Reads XML content: text and elements in any number, as inside an
 * element.
 *
 * @param {string} text
 * @returns {Array<XmlElement | string>}
 * @throws {XmlError}
 */
export function parseFragment(text) {
  return new Reader(text).content(null);
}

class Reader {
  /** @param {string} text */
  constructor(text) {
    this.text = text;
    this.at = 0;
    this.depth = 0;
  }

  /**
   * Children up to the end tag of `parent` (or the end of the text).
   *
   * @param {string | null} parent
   * @returns {Array<XmlElement | string>}
   */
  content(parent) {
    const text = this.text;
    /** @type {Array<XmlElement | string>} */
    const children = [];
    const addText = (/** @type {string} */ piece) => {
      if (!piece) return;
      const last = children.length - 1;
      if (last >= 0 && typeof children[last] === "string") children[last] += piece;
      else children.push(piece);
    };
    for (;;) {
      const lt = text.indexOf("<", this.at);
      const end = lt < 0 ? text.length : lt;
      if (end > this.at) addText(this.unescape(text.slice(this.at, end), this.at));
      this.at = end;
      if (lt < 0) {
        if (parent !== null) throw new XmlError(`<${parent}> is not closed`, this.at);
        return children;
      }
      if (text.startsWith("</", lt)) {
        if (parent === null) throw new XmlError("an end tag without its start tag", lt);
        const name = this.name(lt + 2);
        if (name !== parent) throw new XmlError(`</${name}> closes <${parent}>`, lt);
        this.skipSpace();
        this.expect(">");
        return children;
      } else if (text.startsWith("<!--", lt)) {
        this.at = this.after("-->", lt + 4, "a comment is not closed");
      } else if (text.startsWith("<![CDATA[", lt)) {
        const close = text.indexOf("]]>", lt + 9);
        if (close < 0) throw new XmlError("a CDATA section is not closed", lt);
        addText(text.slice(lt + 9, close));
        this.at = close + 3;
      } else if (text.startsWith("<?", lt)) {
        this.at = this.after("?>", lt + 2, "a processing instruction is not closed");
      } else if (text.startsWith("<!", lt)) {
        throw new XmlError("DTDs and declarations are not accepted", lt);
      } else {
        children.push(this.element(lt));
      }
    }
  }

  /**
   * The element starting at `start` (its `<`).
   *
   * @param {number} start
   * @returns {XmlElement}
   */
  element(start) {
    if (++this.depth > 256) throw new XmlError("elements nested too deep", start);
    const text = this.text;
    const name = this.name(start + 1);
    /** @type {Record<string, string>} */
    const attributes = Object.create(null);
    for (;;) {
      const before = this.at;
      this.skipSpace();
      if (text.startsWith("/>", this.at)) {
        this.at += 2;
        this.depth--;
        return new XmlElement(name, attributes, [], start, this.at);
      }
      if (text[this.at] === ">") {
        this.at++;
        const children = this.content(name);
        this.depth--;
        return new XmlElement(name, attributes, children, start, this.at);
      }
      if (this.at === before) throw new XmlError(`white space expected in <${name}>`, this.at);
      const attribute = this.name(this.at);
      this.skipSpace();
      this.expect("=");
      this.skipSpace();
      const quote = text[this.at];
      if (quote !== '"' && quote !== "'") throw new XmlError(`the value of ${attribute} is not quoted`, this.at);
      const close = text.indexOf(quote, this.at + 1);
      if (close < 0) throw new XmlError(`the value of ${attribute} is not closed`, this.at);
      const raw = text.slice(this.at + 1, close);
      if (raw.includes("<")) throw new XmlError(`< in the value of ${attribute}`, this.at);
      if (Object.hasOwn(attributes, attribute)) throw new XmlError(`${attribute} twice in <${name}>`, this.at);
      attributes[attribute] = this.unescape(raw.replace(/[\t\n\r]/g, " "), this.at + 1);
      this.at = close + 1;
    }
  }

  /** A name starting at `from`; moves past it. @param {number} from */
  name(from) {
    let end = from;
    const text = this.text;
    while (end < text.length && !NAME_END.test(text[end])) end++;
    if (end === from) throw new XmlError("a name expected", from);
    this.at = end;
    return text.slice(from, end);
  }

  skipSpace() {
    const text = this.text;
    while (this.at < text.length && /\s/.test(text[this.at])) this.at++;
  }

  /** @param {string} char */
  expect(char) {
    if (this.text[this.at] !== char) throw new XmlError(`${char} expected`, this.at);
    this.at++;
  }

  /**
   * The offset after `close`, searched from `from`.
   *
   * @param {string} close
   * @param {number} from
   * @param {string} problem
   */
  after(close, from, problem) {
    const at = this.text.indexOf(close, from);
    if (at < 0) throw new XmlError(problem, from);
    return at + close.length;
  }

  /**
   * Text with its references replaced.
   *
   * @param {string} raw
   * @param {number} offset where `raw` starts, for errors.
   */
  unescape(raw, offset) {
    if (!raw.includes("&")) return raw;
    const replaced = raw.replace(REFERENCE, (whole, body) => {
      if (body[0] !== "#") {
        const named = NAMED[body];
        if (named === undefined) throw new XmlError(`unknown entity &${body};`, offset);
        return named;
      }
      const code = body[1] === "x" ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      if (!(code > 0 && code <= 0x10ffff)) throw new XmlError(`bad character reference ${whole}`, offset);
      return String.fromCodePoint(code);
    });
    // A bare & is what is left after the references are replaced from raw.
    if (raw.replace(REFERENCE, "").includes("&")) throw new XmlError("a bare & (write &amp;)", offset);
    return replaced;
  }
}
