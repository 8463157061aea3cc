/**
 * The frames the server sends, read: answer envelopes, the catalog, the
 * verdicts of privileged commands; and what `ask` returns.
 *
 * @module
 */

import { XmlError, parseXml } from "./xml.js";

/** @typedef {import("./xml.js").XmlElement} XmlElement */

const ROOT_TAG = /^\s*<([^\s/>!?]+)/;

/**
 * The root tag of a message as written (after leading white space), or
 * `null` when it does not start with an element.
 *
 * @param {string} xml
 * @returns {string | null}
 */
export function rootTag(xml) {
  const match = ROOT_TAG.exec(xml);
  return match ? match[1] : null;
}

/**
 * @param {string} frame
 * @param {string} what
 * @returns {XmlElement}
 */
function read(frame, what) {
  try {
    const root = parseXml(frame);
    if (root.name === what) return root;
  } catch (error) {
    if (!(error instanceof XmlError)) throw error;
  }
  throw new TypeError(`not a <${what}>: ${frame.slice(0, 80)}`);
}

/** One `<message>` from the server: a payload on a thread. */
export class Envelope {
  /** @type {XmlElement | null} */
  #element = null;

  /**
   * @param {string} sender the agent that produced the payload (`<from>`).
   * @param {string} thread the thread it belongs to.
   * @param {string} payload the payload element, canonical XML, as received.
   * @param {string[]} [huh] the repair notes.
   * @param {string} [xml] the whole frame.
   * @param {boolean} [resumed] whether the server kept it while the connection was down.
   */
  constructor(sender, thread, payload, huh = [], xml = "", resumed = false) {
    /** The agent that produced the payload. */
    this.sender = sender;
    /** The thread it belongs to. */
    this.thread = thread;
    /** The payload element, canonical XML, exactly as received. */
    this.payload = payload;
    /** The payload's root tag as written (`prefix:name` if prefixed). */
    this.tag = rootTag(payload) ?? "";
    /** What the server repaired in the message that led to this one, and in this payload. */
    this.huh = huh;
    /** The whole frame, as received. */
    this.xml = xml;
    /** Whether the server kept this frame while the connection was down. */
    this.resumed = resumed;
  }

  /**
   * Reads a `<message>` frame.
   *
   * @param {string} frame
   * @param {{ resumed?: boolean }} [options]
   * @returns {Envelope}
   * @throws {TypeError} when it is not a `<message>` with a thread and one payload.
   */
  static parse(frame, { resumed = false } = {}) {
    const root = read(frame, "message");
    const meta = root.find("meta");
    const payloads = root.elements().filter((child) => child !== meta);
    const thread = meta?.find("thread")?.text ?? "";
    if (!meta || payloads.length !== 1 || !thread) {
      throw new TypeError(`not a <message> with a thread and one payload: ${frame.slice(0, 80)}`);
    }
    const payload = payloads[0];
    const envelope = new Envelope(
      meta.find("from")?.text ?? "",
      thread,
      frame.slice(payload.start, payload.end),
      meta.elements("huh").map((note) => note.text),
      frame,
      resumed,
    );
    envelope.#element = payload;
    return envelope;
  }

  /** The payload, parsed. */
  get element() {
    this.#element ??= parseXml(this.payload);
    return this.#element;
  }

  /** The payload's text content, child elements' text included. */
  get text() {
    return this.element.text;
  }

  /**
   * An attribute of the payload's root element, or `null`.
   *
   * @param {string} name
   */
  get(name) {
    return this.element.get(name);
  }
}

/**
 * What `ask` returns: the frames of a thread up to and including its first
 * final frame (one whose tag is not a stream tag such as `partial`), and,
 * with `settle`, those that followed it closely.
 */
export class Answer {
  /**
   * @param {string} thread
   * @param {Envelope[]} frames at least one.
   * @param {Iterable<string>} [streamTags]
   */
  constructor(thread, frames, streamTags = ["partial"]) {
    if (!frames.length) throw new TypeError("an answer has at least one frame");
    const stream = new Set(streamTags);
    /** The thread the question started (or continued). */
    this.thread = thread;
    /** The envelopes, in the order they arrived. */
    this.frames = frames;
    /** The first frame whose tag is not a stream tag (the last if none is). */
    this.final = frames.find((frame) => !stream.has(frame.tag)) ?? frames[frames.length - 1];
  }

  /** The frames before the final one. */
  get partials() {
    return this.frames.slice(0, this.frames.indexOf(this.final));
  }

  /** The final frame's payload, canonical XML. */
  get payload() {
    return this.final.payload;
  }

  /** The agent that sent the final frame. */
  get sender() {
    return this.final.sender;
  }

  /** The final payload's root tag. */
  get tag() {
    return this.final.tag;
  }

  /** The final payload's text content. */
  get text() {
    return this.final.text;
  }

  /** The final frame's repair notes. */
  get huh() {
    return this.final.huh;
  }
}

/**
 * One line of the catalog.
 *
 * @typedef {object} Capability
 * @property {string} tag a tag the user may send (Clark notation if namespaced).
 * @property {string} agent the agent that listens to it.
 * @property {string} description what the agent does.
 */

/** The tags the user may send that some agent listens to. */
export class Catalog {
  /**
   * @param {string} user who is logged in.
   * @param {string} session the session id.
   * @param {Capability[]} capabilities sorted by tag.
   * @param {number | null} [sessionTimeout] seconds the session outlives a dropped connection.
   * @param {boolean} [resumed] whether this catalog closed a resume.
   */
  constructor(user, session, capabilities, sessionTimeout = null, resumed = false) {
    this.user = user;
    this.session = session;
    this.capabilities = capabilities;
    this.sessionTimeout = sessionTimeout;
    this.resumed = resumed;
    /** Every tag of the catalog. */
    this.tags = new Set(capabilities.map((capability) => capability.tag));
  }

  /**
   * Whether `tag` may be sent.
   *
   * @param {string} tag
   */
  has(tag) {
    return this.tags.has(tag);
  }

  /**
   * The agent listening to `tag`, or `null`.
   *
   * @param {string} tag
   */
  agent(tag) {
    return this.capabilities.find((capability) => capability.tag === tag)?.agent ?? null;
  }
}

/**
 * Reads a `<catalog>` frame: the catalog, and its resume token (only the
 * first catalog of each connection carries one).
 *
 * @param {string} frame
 * @returns {{ catalog: Catalog, token: string | null }}
 * @throws {TypeError} when it is not a catalog.
 */
export function parseCatalog(frame) {
  const root = read(frame, "catalog");
  const timeout = root.get("session-timeout");
  const capabilities = root.elements("capability").map((capability) => ({
    tag: capability.get("tag") ?? "",
    agent: capability.get("agent") ?? "",
    description: capability.text,
  }));
  const catalog = new Catalog(
    root.get("user") ?? "",
    root.get("session") ?? "",
    capabilities,
    timeout !== null && /^\d+$/.test(timeout) ? Number(timeout) : null,
    root.get("resumed") === "true",
  );
  return { catalog, token: root.get("resume-token") };
}

/** The server's verdict on a signed privileged command. */
export class PrivilegedResult {
  /**
   * @param {string | null} id the command's id (absent when it could not be read).
   * @param {string} status `applied` or `refused`.
   * @param {string} reason why it was refused.
   * @param {string} [xml] the frame as received.
   */
  constructor(id, status, reason, xml = "") {
    this.id = id;
    this.status = status;
    this.reason = reason;
    this.xml = xml;
  }

  /** Whether the command was applied. */
  get applied() {
    return this.status === "applied";
  }

  /**
   * Reads a `<privileged-result>` frame.
   *
   * @param {string} frame
   * @throws {TypeError} when it is not one.
   */
  static parse(frame) {
    const root = read(frame, "privileged-result");
    return new PrivilegedResult(root.get("id"), root.get("status") ?? "", root.text, frame);
  }
}

/**
 * The `id` of a signed `<privileged-command>`'s payload, or `null`.
 *
 * @param {string} document
 * @returns {string | null}
 */
export function commandId(document) {
  try {
    return parseXml(document).find("payload")?.get("id") ?? null;
  } catch {
    return null;
  }
}

/**
 * The thread a whole `<message>` envelope names, or `null`.
 *
 * @param {string} xml
 * @returns {string | null}
 */
export function envelopeThread(xml) {
  try {
    const root = parseXml(xml);
    return root.name === "message" ? root.find("meta")?.find("thread")?.text.trim() || null : null;
  } catch {
    return null;
  }
}
