/**
 * The errors of the client: one class per `<error code>` the server sends,
 * and a few for what happens to the connection and the session.
 *
 * Every error the client throws on purpose is an {@link AgentServerError}
 * with `code`, `reason` (the server's text, or the client's explanation),
 * `agent`, `thread` and `tag` (each `null` when it does not apply) and
 * `frame` (the frame as received).
 *
 * | code | class | when |
 * |---|---|---|
 * | `access-denied` | AccessDenied | the user may not send that root tag |
 * | `no-listener` | NoListener | no agent listens to that tag |
 * | `malformed` | Malformed | the frame is not XML that can be repaired |
 * | `unknown-thread` | UnknownThread | the thread continued is not this session's |
 * | `agent-failed` | AgentFailed | an agent's call failed (trap, limit, its own failure) |
 * | `busy` | Busy | the agent's calls and queue are full |
 * | `thread-limit` | ThreadLimit | the thread went too deep or carried too many messages |
 * | `bad-frame` | BadFrame | a binary frame, or one past `max_message_bytes` |
 * | `shutting-down` | ShuttingDown | the server is shutting down |
 * | `storage-unavailable` | StorageUnavailable | the server's storage is failing; nothing was done |
 * | `frames-dropped` | FramesDropped | frames kept for a resume were dropped |
 * | `authentication-failed` | AuthenticationFailed | the login was refused |
 * | `too-many-connections` | TooManyConnections | the user has `max_connections_per_user` open |
 * | `connection-lost` | ConnectionLost | the connection could not be resumed in time |
 * | `session-lost` | SessionLost | the session is gone, its threads with it |
 * | `session-ended` | SessionEnded | `<end-session/>`, from the client or an agent |
 * | `session-taken-over` | SessionTakenOver | another connection resumed the session |
 * | `flooding` | Flooding | the server closed the connection for flooding |
 * | `timeout` | AskTimeout | no answer within the time given |
 * | `command-refused` | CommandRefused | a signed privileged command was refused |
 *
 * @module
 */

import { XmlError, parseXml } from "./xml.js";

/**
 * @typedef {object} ErrorDetails
 * @property {string} [code] the code, when not the class's own.
 * @property {string | null} [agent] the agent concerned.
 * @property {string | null} [thread] the thread concerned.
 * @property {string | null} [tag] the root tag concerned.
 * @property {string} [frame] the frame the error came from.
 */

/** The base class of every error the client throws on purpose. */
export class AgentServerError extends Error {
  /** The code this class stands for. */
  static code = "error";

  /**
   * @param {string} [reason] the server's text, or the client's explanation.
   * @param {ErrorDetails} [details]
   */
  constructor(reason = "", details = {}) {
    const code = details.code ?? /** @type {typeof AgentServerError} */ (new.target).code;
    super(describe(code, reason, details));
    this.name = new.target.name;
    /** The server's `<error code>`, or one of the client's codes. */
    this.code = code;
    /** The server's text, or the client's explanation. */
    this.reason = reason;
    /** @type {string | null} the agent concerned. */
    this.agent = details.agent ?? null;
    /** @type {string | null} the thread concerned. */
    this.thread = details.thread ?? null;
    /** @type {string | null} the root tag concerned. */
    this.tag = details.tag ?? null;
    /** The frame the error came from, as received (empty for the client's own). */
    this.frame = details.frame ?? "";
  }
}

/**
 * @param {string} code
 * @param {string} reason
 * @param {ErrorDetails} details
 */
function describe(code, reason, details) {
  const parts = [code];
  if (details.agent) parts.push(`agent ${details.agent}`);
  if (details.tag) parts.push(`tag ${details.tag}`);
  if (details.thread) parts.push(`thread ${details.thread}`);
  const text = parts.join(", ");
  return reason ? `${text}: ${reason}` : text;
}

/** The user may not send this root tag; the server counts it as a bad message. */
export class AccessDenied extends AgentServerError {
  static code = "access-denied";
}

/** No agent listens to this root tag. */
export class NoListener extends AgentServerError {
  static code = "no-listener";
}

/** The frame is not XML that can be repaired, or breaks an XML limit; a bad message. */
export class Malformed extends AgentServerError {
  static code = "malformed";
}

/** The thread continued is not one of this session's live threads. */
export class UnknownThread extends AgentServerError {
  static code = "unknown-thread";
}

/** An agent's call failed: it trapped, hit a limit, or failed on its own; `agent` names it. */
export class AgentFailed extends AgentServerError {
  static code = "agent-failed";
}

/** The agent's calls and queue were full; asking again later may succeed. */
export class Busy extends AgentServerError {
  static code = "busy";
}

/** The thread went past `max_hops` or `max_thread_messages`, and has ended. */
export class ThreadLimit extends AgentServerError {
  static code = "thread-limit";
}

/** A binary frame, or one past `max_message_bytes`; a bad message. */
export class BadFrame extends AgentServerError {
  static code = "bad-frame";
}

/** The server is shutting down and takes no new messages. */
export class ShuttingDown extends AgentServerError {
  static code = "shutting-down";
}

/** The server's storage has been failing: nothing was done; send it again later. */
export class StorageUnavailable extends AgentServerError {
  static code = "storage-unavailable";
}

/**
 * Frames kept for the session while its connection was down were dropped,
 * the oldest first. The client counts them (`client.framesDropped`) rather
 * than throwing this.
 */
export class FramesDropped extends AgentServerError {
  static code = "frames-dropped";

  /**
   * @param {string} [reason]
   * @param {ErrorDetails & { count?: number }} [details]
   */
  constructor(reason = "", details = {}) {
    const count = details.count ?? 0;
    super(reason || `${count} frames dropped`, details);
    /** How many frames were dropped. */
    this.count = count;
  }
}

/** The server refused the login (it never says why). */
export class AuthenticationFailed extends AgentServerError {
  static code = "authentication-failed";
}

/** The user already has `max_connections_per_user` connections. */
export class TooManyConnections extends AgentServerError {
  static code = "too-many-connections";
}

/** The connection is gone and could not be resumed in time; or the client was closed. */
export class ConnectionLost extends AgentServerError {
  static code = "connection-lost";
}

/** The session could not be resumed (it expired, or the server forgot it): its threads are gone. */
export class SessionLost extends ConnectionLost {
  static code = "session-lost";
}

/** The session ended: `<end-session/>` from this client or from an agent. */
export class SessionEnded extends ConnectionLost {
  static code = "session-ended";
}

/** Another connection resumed this session; this one was closed. */
export class SessionTakenOver extends ConnectionLost {
  static code = "session-taken-over";
}

/** The server closed the connection and ended the session for flooding. */
export class Flooding extends ConnectionLost {
  static code = "flooding";
}

/** No answer (or no next frame) within the time given. */
export class AskTimeout extends AgentServerError {
  static code = "timeout";
}

/** A signed privileged command was refused: `reason` says why, `commandId` names it. */
export class CommandRefused extends AgentServerError {
  static code = "command-refused";

  /**
   * @param {string} [reason]
   * @param {{ commandId?: string | null, frame?: string }} [details]
   */
  constructor(reason = "", details = {}) {
    super(reason, { frame: details.frame });
    /** @type {string | null} the command's id, when the server could read it. */
    this.commandId = details.commandId ?? null;
  }
}

/** @type {ReadonlyArray<typeof AgentServerError>} */
const SERVER_ERRORS = [
  AccessDenied,
  NoListener,
  Malformed,
  UnknownThread,
  AgentFailed,
  Busy,
  ThreadLimit,
  BadFrame,
  ShuttingDown,
  StorageUnavailable,
  FramesDropped,
];

/** The class of each code the server sends in an error frame. */
export const ERROR_CLASSES = Object.freeze(
  Object.fromEntries(SERVER_ERRORS.map((cls) => [cls.code, cls])),
);

/** Codes the server counts as bad messages (more than 20 within 10 s close the connection). */
export const BAD_MESSAGE_CODES = Object.freeze(new Set(["access-denied", "malformed", "bad-frame"]));

/**
 * The error an `<error>` or `<access-denied>` frame stands for. An unknown
 * code gives a plain {@link AgentServerError} with that code.
 *
 * @param {string} frame
 * @returns {AgentServerError}
 * @throws {TypeError} when the frame is not an error frame.
 */
export function errorFromFrame(frame) {
  let root;
  try {
    root = parseXml(frame);
  } catch (error) {
    if (error instanceof XmlError) throw new TypeError(`not an error frame: ${frame.slice(0, 80)}`);
    throw error;
  }
  let code;
  if (root.name === "access-denied") code = "access-denied";
  else if (root.name === "error") code = root.get("code") ?? "error";
  else throw new TypeError(`not an error frame: ${frame.slice(0, 80)}`);
  const details = { code, agent: root.get("agent"), thread: root.get("thread"), tag: root.get("tag"), frame };
  const cls = Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code] : AgentServerError;
  if (cls === FramesDropped) {
    const count = Number.parseInt(root.get("count") ?? "0", 10);
    return new FramesDropped(root.text, { ...details, count: Number.isFinite(count) ? count : 0 });
  }
  return new cls(root.text, details);
}
