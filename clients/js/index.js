/**
 * A client for AgentServer, for browsers and Node 18 or later: log in with
 * TOTP, read the catalog, ask, stream, continue threads, resume after a
 * dropped connection, stay within the flood limits, and carry signed
 * privileged commands. An ES module without dependencies; the platform's
 * `WebSocket` and WebCrypto do the work.
 *
 * ```js
 * import { Client } from "./index.js";
 *
 * const client = new Client("wss://127.0.0.1:8765/", "svc", { totpSecret: SECRET });
 * await client.connect();
 * const answer = await client.ask("<calculate>2 + 3 * 4</calculate>");
 * console.log(answer.text); // 14
 * await client.close();
 * ```
 *
 * The guide: `docs/clients/js.md` in the AgentServer repository.
 *
 * @module
 */

export { Client, MAX_FRAMES_PER_THREAD, MAX_THREADS } from "./client.js";
export {
  AccessDenied,
  AgentFailed,
  AgentServerError,
  AskTimeout,
  AuthenticationFailed,
  BAD_MESSAGE_CODES,
  BadFrame,
  Busy,
  CommandRefused,
  ConnectionLost,
  ERROR_CLASSES,
  Flooding,
  FramesDropped,
  Malformed,
  NoListener,
  SessionEnded,
  SessionLost,
  SessionTakenOver,
  ShuttingDown,
  StorageUnavailable,
  ThreadLimit,
  TooManyConnections,
  UnknownThread,
  errorFromFrame,
} from "./errors.js";
export { Answer, Catalog, Envelope, PrivilegedResult, commandId, parseCatalog, rootTag } from "./frames.js";
export { RateLimit, TOTP_STEPS, TotpSteps } from "./limits.js";
export { TOTP_STEP_SECONDS, Totp, decodeBase32, stepAt } from "./totp.js";
export { XmlElement, XmlError, element, escape, escapeAttribute, parseFragment, parseXml } from "./xml.js";

/** The version of this client. */
export const VERSION = "0.1.0";
