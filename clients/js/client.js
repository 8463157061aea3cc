/**
 * The client: one WSS connection, one session, with its threads.
 *
 * How answers are matched to questions. A message that is not a
 * `<message>` envelope starts a thread, and the server does not say which:
 * the thread's id first appears on the first frame the thread sends back
 * (an answer, or an error naming the thread). So the client starts one
 * thread at a time per connection: a question holds the connection's start
 * slot from the moment it is sent until a frame names a thread the client
 * has not seen (its thread), or a refusal names no thread (`malformed`,
 * `access-denied`, `no-listener`, `bad-frame`, `shutting-down`: its
 * verdict). Other questions wait for the slot; everything else (reading
 * answers, continuing threads, streams) runs side by side. A question
 * whose first frame did not come within its timeout keeps the slot for
 * `lateGraceMs` more, so that its late frame is not taken for the next
 * question's.
 *
 * When a thread is answered. The server never says that a thread is
 * finished: an agent may answer with several payloads, stream `<partial>`
 * frames first, or delegate to another agent which answers in its place.
 * `ask` returns when the thread has delivered its first final frame (one
 * whose tag is not one of `streamTags`), with the stream frames before it;
 * an error on the thread throws instead. Later frames wait, in order, for
 * the next read of the thread (`thread()`, or `ask` with `thread`).
 *
 * @module
 */

import {
  AgentServerError,
  AskTimeout,
  AuthenticationFailed,
  BAD_MESSAGE_CODES,
  CommandRefused,
  ConnectionLost,
  Flooding,
  FramesDropped,
  SessionEnded,
  SessionLost,
  SessionTakenOver,
  TooManyConnections,
  errorFromFrame,
} from "./errors.js";
import { Answer, Envelope, PrivilegedResult, commandId, envelopeThread, parseCatalog, rootTag } from "./frames.js";
import { Limiter, RateLimit, TOTP_STEPS } from "./limits.js";
import { Totp } from "./totp.js";
import { escape, escapeAttribute } from "./xml.js";

/** @typedef {import("./frames.js").Catalog} Catalog */
/** @typedef {import("./limits.js").TotpSteps} TotpSteps */

/** Frames kept per thread until read (the oldest are dropped past it). */
export const MAX_FRAMES_PER_THREAD = 1000;
/** Threads the client keeps frames for (the oldest unread are forgotten). */
export const MAX_THREADS = 1024;
/** Thread ids remembered as seen, so that a late frame of a forgotten thread does not start one. */
const MAX_SEEN_THREADS = 4 * MAX_THREADS;
/** Frames kept that belonged to no call. */
const MAX_UNCLAIMED = 1000;
/** The longest a timer may wait (setTimeout's limit). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const OPEN = 1;

/**
 * What the client reports to `onStatus`:
 * `connecting` (a login starts; `waitMs` when it waits for a fresh TOTP
 * step), `connected` (logged in), `reconnecting` (the connection dropped;
 * `code`, `reason`), `resumed`, `logging-in` (the session could not be
 * resumed: a new login), `closed` (`error` says why).
 *
 * @typedef {"connecting" | "connected" | "reconnecting" | "resumed" | "logging-in" | "closed"} Status
 */

/**
 * @typedef {object} StatusDetail
 * @property {number} [waitMs] how long a login waits for a fresh TOTP step.
 * @property {number} [code] the close code of a dropped connection.
 * @property {string} [reason] the close reason of a dropped connection.
 * @property {AgentServerError} [error] why the client closed.
 */

/**
 * A code typed by a person: a string (used for the first login only), or
 * a function asked for one at each login.
 *
 * @typedef {string | ((request: { user: string, attempt: number, relogin: boolean }) => string | Promise<string>)} CodeSource
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [totpSecret] the user's base32 TOTP secret (`agentserver user add … --secret-out FILE` writes it).
 * @property {CodeSource} [code] a code typed by a person, instead of `totpSecret`.
 * @property {{ new (url: string): WebSocket }} [WebSocket] the WebSocket class (default: the platform's).
 * @property {number} [timeout] milliseconds a call waits by default (`Infinity`: for ever); default 30,000.
 * @property {RateLimit | null} [rateLimit] how fast to send; `null` sends as fast as asked (default `new RateLimit()`).
 * @property {Iterable<string>} [streamTags] payload tags that are not a thread's final answer (default `["partial"]`).
 * @property {boolean} [resume] resume the session after a dropped connection (default true).
 * @property {number} [resumeTimeout] milliseconds to keep trying to resume (default 60,000).
 * @property {number} [reconnectDelay] milliseconds before the first attempt (default 0).
 * @property {boolean} [relogin] log in to a new session when the old one cannot be resumed (default true).
 * @property {number} [loginAttempts] logins tried before giving up, each in a fresh TOTP step (default 2).
 * @property {number} [lateGrace] milliseconds a timed-out question keeps the start slot (default 10,000).
 * @property {number} [openTimeout] milliseconds to connect, log in or resume (default 10,000).
 * @property {(catalog: Catalog) => void} [onCatalog] called with each new catalog.
 * @property {(status: Status, detail: StatusDetail) => void} [onStatus] called when the connection changes.
 * @property {(frame: string) => void} [onUnclaimed] called with each frame that belongs to no call.
 * @property {TotpSteps} [totpSteps] the record of TOTP steps used (shared by every client unless given).
 */

/**
 * @template T
 * @typedef {object} Deferred
 * @property {Promise<T>} promise
 * @property {(value: T) => void} resolve
 * @property {(error: unknown) => void} reject
 * @property {boolean} done
 */

/**
 * @template T
 * @returns {Deferred<T>}
 */
function deferred() {
  /** @type {(value: T) => void} */
  let resolve = () => {};
  /** @type {(error: unknown) => void} */
  let reject = () => {};
  const promise = new Promise((yes, no) => {
    resolve = yes;
    reject = no;
  });
  // Nobody may be waiting when it fails: that is not an unhandled rejection.
  promise.catch(() => {});
  /** @type {Deferred<T>} */
  const d = {
    promise,
    done: false,
    resolve: (value) => {
      if (!d.done) {
        d.done = true;
        resolve(value);
      }
    },
    reject: (error) => {
      if (!d.done) {
        d.done = true;
        reject(error);
      }
    },
  };
  return d;
}

const now = () => performance.now();

/**
 * Waits for `d`, failing with {@link AskTimeout} at `deadline`.
 *
 * @template T
 * @param {Deferred<T>} d
 * @param {number} deadline a `performance.now()` instant, or `Infinity`.
 * @param {string} message
 * @returns {Promise<T>}
 */
async function waitUntil(d, deadline, message) {
  if (deadline === Infinity) return d.promise;
  const timer = setTimeout(() => d.reject(new AskTimeout(message)), Math.min(MAX_TIMER_MS, Math.max(0, deadline - now())));
  try {
    return await d.promise;
  } finally {
    clearTimeout(timer);
  }
}

/** The frames of one thread that nobody has read yet. */
class ThreadState {
  /** @param {string} id */
  constructor(id) {
    this.id = id;
    /** @type {Array<Envelope | AgentServerError>} */
    this.items = [];
    /** @type {Deferred<void> | null} */
    this.waiter = null;
    /** @type {AgentServerError | null} */
    this.failure = null;
  }

  /** @param {Envelope | AgentServerError} item */
  push(item) {
    this.items.push(item);
    if (this.items.length > MAX_FRAMES_PER_THREAD) this.items.shift();
    this.wake();
  }

  wake() {
    this.waiter?.resolve();
  }
}

/**
 * A message that started a thread whose id is not known yet.
 *
 * @typedef {object} PendingStart
 * @property {Deferred<[string, Envelope | AgentServerError] | AgentServerError>} result
 * @property {boolean} sent
 * @property {boolean} released
 */

/** The server closed a connection before it was installed. */
class Closed extends Error {
  /**
   * @param {number} code
   * @param {string} reason
   */
  constructor(code, reason) {
    super(`${code} ${reason}`.trim());
    this.code = code;
    this.reason = reason;
  }
}

/**
 * Reads a connection's first frames: after a resume, the frames the server
 * kept (in `kept`), then the catalog; frames after the catalog wait in
 * `after`. The client hands both on once it has counted the resume.
 */
class Handshake {
  /** @param {WebSocket} ws */
  constructor(ws) {
    /** @type {string[]} */
    this.kept = [];
    /** @type {string[]} */
    this.after = [];
    /** @type {Deferred<string>} */
    this.catalog = deferred();
    /** @type {{ code: number, reason: string } | null} */
    this.closed = null;
    ws.onmessage = (event) => {
      const frame = event.data;
      if (typeof frame !== "string") return;
      if (this.catalog.done) this.after.push(frame);
      else if (frame.startsWith("<catalog")) this.catalog.resolve(frame);
      else this.kept.push(frame);
    };
    ws.onclose = (event) => {
      this.closed = { code: event.code, reason: event.reason };
      this.catalog.reject(new Closed(event.code, event.reason));
    };
  }

  /**
   * The catalog and its resume token.
   *
   * @param {number} timeoutMs
   * @throws {Closed | AskTimeout | TypeError}
   */
  async wait(timeoutMs) {
    return parseCatalog(await waitUntil(this.catalog, now() + timeoutMs, "no catalog in time"));
  }
}

/**
 * The error a close from the server stands for when the session cannot be
 * resumed after it; `null` when it can.
 *
 * @param {string} reason
 * @returns {AgentServerError | null}
 */
function ending(reason) {
  if (reason === "flooding") return new Flooding("the server closed the connection for flooding and ended the session");
  if (reason === "session ended") return new SessionEnded("the session ended");
  if (reason === "session resumed elsewhere") return new SessionTakenOver("another connection resumed this session");
  return null;
}

/**
 * @param {unknown} error
 * @returns {AgentServerError}
 */
function asClientError(error) {
  if (error instanceof AgentServerError) return error;
  return new ConnectionLost(error instanceof Error ? error.message : String(error));
}

/**
 * A client of one AgentServer session, over one WSS connection.
 *
 * ```js
 * const client = new Client("wss://127.0.0.1:8765/", "svc", { totpSecret: SECRET });
 * await client.connect();
 * const answer = await client.ask("<calculate>2 + 3 * 4</calculate>");
 * console.log(answer.sender, answer.text); // calc 14
 * await client.close();
 * ```
 */
export class Client {
  /** @type {{ new (url: string): WebSocket }} */
  #WebSocket;
  /** @type {Totp | null} */
  #totp = null;
  /** @type {CodeSource | null} */
  #code = null;
  #codeUsed = false;
  /** @type {TotpSteps} */
  #steps;
  /** @type {Limiter | null} */
  #limiter;
  /** @type {WebSocket | null} */
  #ws = null;
  #connected = false;
  /** @type {Deferred<void>[]} */
  #connectedWaiters = [];
  #closing = false;
  /** @type {AgentServerError | null} */
  #failure = null;
  /** @type {Catalog | null} */
  #catalog = null;
  /** @type {Set<string>} */
  #tags = new Set();
  /** @type {Deferred<void>[]} */
  #catalogWaiters = [];
  /** @type {string | null} */
  #token = null;
  /** @type {Map<string, ThreadState>} */
  #threads = new Map();
  /** @type {Set<string>} */
  #seen = new Set();
  #slotBusy = false;
  /** @type {Deferred<void>[]} */
  #slotWaiters = [];
  /** @type {PendingStart | null} */
  #pending = null;
  /** @type {string | null} */
  #lastContinuation = null;
  /** @type {Promise<void>} */
  #commandChain = Promise.resolve();
  /** @type {{ id: string | null, result: Deferred<PrivilegedResult> } | null} */
  #command = null;
  /** @type {Set<ReturnType<typeof setTimeout>>} */
  #timers = new Set();
  /** @type {Set<() => void>} */
  #sleepers = new Set();

  /**
   * @param {string} url the server, `wss://host:port/` (TLS is mandatory).
   * @param {string} user who to log in as.
   * @param {ClientOptions} options `totpSecret` or `code`, and the rest.
   */
  constructor(url, user, options = {}) {
    if (!/^wss:\/\//i.test(url)) throw new TypeError(`not a wss:// URL: ${url} (the server speaks TLS only)`);
    const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketClass !== "function") {
      throw new TypeError(
        "no WebSocket class: Node 20 needs --experimental-websocket (Node 22 has it), or pass the WebSocket option",
      );
    }
    if (options.totpSecret) this.#totp = new Totp(options.totpSecret);
    else if (options.code) this.#code = options.code;
    else throw new TypeError("give totpSecret (a stored secret) or code (typed by a person)");
    this.#WebSocket = WebSocketClass;
    /** The server. */
    this.url = url;
    /** Who logs in. */
    this.user = user;
    /** Milliseconds a call waits by default. */
    this.timeout = options.timeout ?? 30_000;
    /** Payload tags that are not a thread's final answer. */
    this.streamTags = new Set(options.streamTags ?? ["partial"]);
    /** Whether to resume after a dropped connection. */
    this.resume = options.resume ?? true;
    /** Milliseconds to keep trying to resume. */
    this.resumeTimeout = options.resumeTimeout ?? 60_000;
    /** Milliseconds before the first attempt to resume. */
    this.reconnectDelay = options.reconnectDelay ?? 0;
    /** Whether to log in again when the session cannot be resumed. */
    this.relogin = options.relogin ?? true;
    /** Logins tried before giving up. */
    this.loginAttempts = Math.max(1, options.loginAttempts ?? 2);
    /** Milliseconds a timed-out question keeps the start slot. */
    this.lateGrace = options.lateGrace ?? 10_000;
    /** Milliseconds to connect, log in or resume. */
    this.openTimeout = options.openTimeout ?? 10_000;
    this.onCatalog = options.onCatalog ?? null;
    this.onStatus = options.onStatus ?? null;
    this.onUnclaimed = options.onUnclaimed ?? null;
    /** How many times the client logged in (a fresh session each time). */
    this.logins = 0;
    /** How many times it resumed its session after a dropped connection. */
    this.resumes = 0;
    /** Frames the server dropped while the connection was down. */
    this.framesDropped = 0;
    /** @type {string[]} frames that belonged to no call (the newest 1,000). */
    this.unclaimed = [];
    this.#steps = options.totpSteps ?? TOTP_STEPS;
    const rateLimit = options.rateLimit === undefined ? new RateLimit() : options.rateLimit;
    this.#limiter = rateLimit ? new Limiter(rateLimit) : null;
  }

  // ------------------------------------------------------------------ life

  /**
   * Connects and logs in (waiting for a fresh TOTP step if this program
   * already used the current one for this user).
   *
   * @throws {AuthenticationFailed} the server refused every attempt.
   * @throws {TooManyConnections} the user has too many connections open.
   * @throws {ConnectionLost} the server could not be reached.
   */
  async connect() {
    if (this.#ws) throw new Error("already connected");
    if (this.#closing) throw new ConnectionLost("the client was closed");
    const login = await this.#login(false);
    this.#install(login.ws, login.handshake, login.catalog, login.token);
    this.#status("connected", {});
  }

  /**
   * Closes the connection; with `endSession` (the default) it first ends
   * the session (`<end-session/>`), which stops its threads and frees its
   * agent instances. Calls still waiting fail with {@link SessionEnded}
   * (or {@link ConnectionLost}). Closing while the client resumes leaves
   * the session to expire on the server.
   *
   * @param {{ endSession?: boolean }} [options]
   */
  async close({ endSession = true } = {}) {
    if (this.#closing) return;
    this.#closing = true;
    const ws = this.#ws;
    if (ws && this.#connected && endSession && !this.#failure && ws.readyState === OPEN) {
      const closed = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
      ws.send("<end-session/>");
      await Promise.race([closed, this.#sleep(5000)]);
    }
    for (const wake of this.#sleepers) wake();
    if (ws && ws.readyState <= OPEN) ws.close(1000);
    this.#fail(endSession ? new SessionEnded("the client ended the session") : new ConnectionLost("the client was closed"));
  }

  // ------------------------------------------------------------ properties

  /** The tags this user may send, as the server's latest catalog says. */
  get catalog() {
    if (!this.#catalog) throw new Error("not connected: call connect() first");
    return this.#catalog;
  }

  /** The session's id. */
  get sessionId() {
    return this.catalog.session;
  }

  /** Whether a connection is up now (`false` while resuming). */
  get connected() {
    return this.#connected && !this.#failure;
  }

  /** The current WebSocket (it changes at each resume). */
  get websocket() {
    return this.#ws;
  }

  // -------------------------------------------------------------- messages

  /**
   * Sends `xml` and returns the answer: the envelopes of its thread up to
   * and including the first final one, plus, with `settle`, those that
   * follow within `settle` milliseconds of each other.
   *
   * @param {string} xml one XML element; or a whole `<message>` envelope naming a thread.
   * @param {{ thread?: string | null, timeout?: number, settle?: number }} [options]
   *   `thread`: continue it instead of starting one; `timeout`: milliseconds
   *   for the whole question; `settle`: milliseconds of quiet that end the
   *   answer after its final frame.
   * @returns {Promise<Answer>}
   * @throws {AgentServerError} the subclass for the error the server sent ({@link AccessDenied}, {@link AgentFailed}, …).
   * @throws {AskTimeout} no final frame in time.
   */
  async ask(xml, { thread = null, timeout, settle = 0 } = {}) {
    const deadline = this.#deadline(timeout);
    /** @type {Envelope[]} */
    const frames = [];
    let state;
    const continued = this.#continuation(xml, thread);
    if (continued === null) {
      const [threadId, first] = await this.#start(xml, deadline);
      if (first instanceof AgentServerError) throw first;
      frames.push(first);
      state = this.#thread(threadId);
    } else {
      state = await this.#continue(xml, continued, deadline);
    }
    while (!frames.length || this.streamTags.has(/** @type {Envelope} */ (frames.at(-1)).tag)) {
      frames.push(await this.#next(state, deadline));
    }
    while (settle > 0) {
      try {
        frames.push(await this.#next(state, Math.min(now() + settle, deadline)));
      } catch (error) {
        if (error instanceof AskTimeout) break;
        throw error;
      }
    }
    return new Answer(state.id, frames, this.streamTags);
  }

  /**
   * Sends `xml` and returns its thread's id. Without `thread` it starts a
   * thread and returns once the thread's first frame has arrived (until
   * then the server does not say which thread it is); that frame and the
   * rest wait for {@link Client#thread}. With `thread` it continues that
   * thread and returns at once.
   *
   * @param {string} xml
   * @param {{ thread?: string | null, timeout?: number }} [options]
   * @returns {Promise<string>}
   * @throws {AgentServerError} a refusal of a message that started a thread.
   * @throws {AskTimeout} no frame of the new thread in time.
   */
  async send(xml, { thread = null, timeout } = {}) {
    const deadline = this.#deadline(timeout);
    const continued = this.#continuation(xml, thread);
    if (continued !== null) return (await this.#continue(xml, continued, deadline)).id;
    const [threadId, first] = await this.#start(xml, deadline);
    // The first frame waits for thread(), before any that came after.
    this.#thread(threadId).items.unshift(first);
    return threadId;
  }

  /**
   * The envelopes of a thread as they arrive, from the first not yet read.
   *
   * ```js
   * for await (const frame of client.thread(threadId)) console.log(frame.text);
   * ```
   *
   * @param {string} threadId
   * @param {{ timeout?: number, untilFinal?: boolean }} [options]
   *   `timeout`: milliseconds to wait for each frame; `untilFinal`: stop
   *   after the first final frame (default), or go on until the caller stops.
   * @returns {AsyncGenerator<Envelope, void, undefined>}
   * @throws {AgentServerError} an error frame on the thread.
   * @throws {AskTimeout} no frame within `timeout`.
   */
  async *thread(threadId, { timeout, untilFinal = true } = {}) {
    const state = this.#thread(threadId);
    for (;;) {
      const frame = await this.#next(state, this.#deadline(timeout));
      yield frame;
      if (untilFinal && !this.streamTags.has(frame.tag)) return;
    }
  }

  /**
   * Sends `xml` and yields its thread's envelopes as they arrive, stream
   * frames (`<partial>`) first, until the final one. `timeout` bounds the
   * wait for each frame.
   *
   * @param {string} xml
   * @param {{ thread?: string | null, timeout?: number }} [options]
   * @returns {AsyncGenerator<Envelope, void, undefined>}
   */
  async *stream(xml, { thread = null, timeout } = {}) {
    const threadId = await this.send(xml, { thread, timeout });
    yield* this.thread(threadId, { timeout });
  }

  /**
   * Carries a signed `<privileged-command>` (as `agentserver sign` writes
   * it) and returns the server's verdict. One command at a time per
   * client; the signature alone grants authority.
   *
   * @param {string} document
   * @param {{ timeout?: number }} [options] milliseconds for the verdict (default 120,000: compiling a large component takes a while).
   * @returns {Promise<PrivilegedResult>}
   * @throws {CommandRefused} the server refused it (`reason` says why).
   * @throws {AskTimeout} no verdict in time.
   */
  async apply(document, { timeout = 120_000 } = {}) {
    const expected = commandId(document);
    const deadline = this.#deadline(timeout);
    const previous = this.#commandChain;
    /** @type {() => void} */
    let done = () => {};
    this.#commandChain = new Promise((resolve) => {
      done = resolve;
    });
    await previous;
    let result;
    try {
      /** @type {Deferred<PrivilegedResult>} */
      const verdict = deferred();
      this.#command = { id: expected, result: verdict };
      await this.#send(document.trim(), deadline);
      result = await waitUntil(verdict, deadline, `no verdict on command ${expected} in time`);
    } finally {
      this.#command = null;
      done();
    }
    if (!result.applied) throw new CommandRefused(result.reason, { commandId: result.id, frame: result.xml });
    return result;
  }

  /**
   * {@link Client#apply} of the signed command in file `path` (Node only).
   *
   * @param {string} path
   * @param {{ timeout?: number }} [options]
   */
  async applyFile(path, options = {}) {
    const { readFile } = await import("node:fs/promises");
    return this.apply(await readFile(path, "utf8"), options);
  }

  /**
   * Waits until the catalog satisfies `predicate` (for instance
   * `(c) => c.has("twin")` after registering an agent) and returns it.
   *
   * @param {(catalog: Catalog) => boolean} predicate
   * @param {{ timeout?: number }} [options]
   * @returns {Promise<Catalog>}
   * @throws {AskTimeout} not in time.
   */
  async waitForCatalog(predicate, { timeout } = {}) {
    const deadline = this.#deadline(timeout);
    while (!predicate(this.catalog)) {
      if (this.#failure) throw this.#failure;
      /** @type {Deferred<void>} */
      const waiter = deferred();
      this.#catalogWaiters.push(waiter);
      await waitUntil(waiter, deadline, "no such catalog in time");
    }
    return this.catalog;
  }

  // --------------------------------------------------------------- sending

  /** @param {number | undefined} timeout */
  #deadline(timeout) {
    const ms = timeout ?? this.timeout;
    return Number.isFinite(ms) ? now() + ms : Infinity;
  }

  /**
   * The thread `xml` continues: `thread`, or the one a whole `<message>`
   * envelope names; `null` when it starts one.
   *
   * @param {string} xml
   * @param {string | null} thread
   */
  #continuation(xml, thread) {
    if (rootTag(xml) !== "message") return thread;
    const named = envelopeThread(xml);
    if (named === null) return thread;
    if (thread !== null && thread !== named) throw new TypeError(`the envelope names thread ${named}, not ${thread}`);
    return named;
  }

  /** Messages sent that started a thread and have no verdict yet. */
  #unresolved() {
    return this.#pending?.sent ? 1 : 0;
  }

  /**
   * Sends one frame within the rate limit, over whichever connection is up
   * (waiting for a resume if none is).
   *
   * @param {string} text
   * @param {number} deadline
   * @param {boolean} [continuation] a continuation that might be refused as a bad message.
   */
  async #send(text, deadline, continuation = false) {
    for (;;) {
      if (this.#failure) throw this.#failure;
      const ws = this.#ws;
      if (!ws) throw new Error("not connected: call connect() first");
      if (!this.#connected) {
        await this.#waitConnected(deadline);
        continue;
      }
      const limiter = this.#limiter;
      if (limiter && limiter.delay(this.#unresolved()) > 0) {
        if (!(await limiter.acquire(deadline, () => this.#unresolved()))) {
          throw new AskTimeout("the rate limit would hold the message past its deadline");
        }
        if (ws !== this.#ws || !this.#connected) continue;
      }
      if (ws.readyState !== OPEN) {
        // Closing: the close event comes next, and the next connection takes the frame.
        this.#setConnected(false);
        continue;
      }
      if (continuation) limiter?.recordContinuation();
      ws.send(text);
      return;
    }
  }

  /** @param {number} deadline */
  async #waitConnected(deadline) {
    if (this.#connected || this.#failure) return;
    /** @type {Deferred<void>} */
    const waiter = deferred();
    this.#connectedWaiters.push(waiter);
    await waitUntil(waiter, deadline, "the connection was not resumed in time");
  }

  /** @param {boolean} connected */
  #setConnected(connected) {
    this.#connected = connected;
    if (connected) {
      const waiters = this.#connectedWaiters;
      this.#connectedWaiters = [];
      for (const waiter of waiters) waiter.resolve();
    }
  }

  /**
   * Sends a message that continues `thread`.
   *
   * @param {string} xml
   * @param {string} thread
   * @param {number} deadline
   */
  async #continue(xml, thread, deadline) {
    const state = this.#thread(thread);
    this.#lastContinuation = thread;
    const whole = rootTag(xml) === "message";
    const frame = whole ? xml : `<message><meta><thread>${escape(thread)}</thread></meta>${xml}</message>`;
    // A tag of the catalog will not be denied; any other might be.
    const tag = whole ? null : rootTag(xml);
    await this.#send(frame, deadline, tag === null || !this.#tags.has(tag));
    return state;
  }

  /**
   * Sends a message that starts a thread, holding the start slot until the
   * thread's first frame (or its refusal) arrives.
   *
   * @param {string} xml
   * @param {number} deadline
   * @returns {Promise<[string, Envelope | AgentServerError]>} the thread and its first frame (which may be an error on it).
   */
  async #start(xml, deadline) {
    if (this.#slotBusy || this.#slotWaiters.length) await this.#takeSlot(deadline);
    else this.#slotBusy = true;
    /** @type {PendingStart} */
    const pending = { result: deferred(), sent: false, released: false };
    this.#pending = pending;
    try {
      await this.#send(xml, deadline);
    } catch (error) {
      this.#release(pending);
      throw error;
    }
    pending.sent = true;
    let result;
    try {
      result = await waitUntil(pending.result, deadline, "no frame of the new thread in time");
    } catch (error) {
      // Its asker gave up: the slot stays held a while for a late frame.
      this.#haunt(pending);
      throw error;
    }
    if (result instanceof AgentServerError) throw result;
    return result;
  }

  /** @param {PendingStart} pending */
  #haunt(pending) {
    if (pending.released) return;
    this.#later(this.lateGrace, () => this.#release(pending));
  }

  /**
   * Runs `action` after `ms`, on a timer that does not keep Node running
   * and that the client's end clears.
   *
   * @param {number} ms
   * @param {() => void} action
   */
  #later(ms, action) {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      action();
    }, ms);
    /** @type {any} */ (timer).unref?.();
    this.#timers.add(timer);
  }

  /**
   * Frees the start slot held by `pending` (once).
   *
   * @param {PendingStart} pending
   */
  #release(pending) {
    if (pending.released) return;
    pending.released = true;
    if (this.#pending === pending) this.#pending = null;
    this.#freeSlot();
  }

  /** @param {number} deadline */
  async #takeSlot(deadline) {
    /** @type {Deferred<void>} */
    const waiter = deferred();
    this.#slotWaiters.push(waiter);
    try {
      await waitUntil(waiter, deadline, "no turn to start a thread in time");
    } catch (error) {
      this.#slotWaiters = this.#slotWaiters.filter((other) => other !== waiter);
      throw error;
    }
  }

  /** Hands the start slot to the next waiter, or frees it. */
  #freeSlot() {
    while (this.#slotWaiters.length) {
      const waiter = /** @type {Deferred<void>} */ (this.#slotWaiters.shift());
      if (!waiter.done) {
        waiter.resolve();
        return;
      }
    }
    this.#slotBusy = false;
  }

  // ------------------------------------------------------------- receiving

  /** @param {string} threadId */
  #remember(threadId) {
    this.#seen.delete(threadId);
    this.#seen.add(threadId);
    if (this.#seen.size > MAX_SEEN_THREADS) this.#seen.delete(/** @type {string} */ (this.#seen.values().next().value));
  }

  /**
   * The unread frames of a thread (made when first needed).
   *
   * @param {string} threadId
   */
  #thread(threadId) {
    let state = this.#threads.get(threadId);
    if (!state) {
      state = new ThreadState(threadId);
      this.#threads.set(threadId, state);
      this.#remember(threadId);
      if (this.#threads.size > MAX_THREADS) {
        for (const [oldId, old] of this.#threads) {
          if (!old.waiter && old !== state) {
            this.#threads.delete(oldId);
            break;
          }
        }
      }
    }
    return state;
  }

  /**
   * The next frame of `state`'s thread; throws its errors.
   *
   * @param {ThreadState} state
   * @param {number} deadline
   * @returns {Promise<Envelope>}
   */
  async #next(state, deadline) {
    while (!state.items.length) {
      const failure = state.failure ?? this.#failure;
      if (failure) throw failure;
      if (state.waiter) throw new Error(`thread ${state.id} is already being read`);
      /** @type {Deferred<void>} */
      const waiter = deferred();
      state.waiter = waiter;
      try {
        await waitUntil(waiter, deadline, "no frame within the time given");
      } finally {
        state.waiter = null;
      }
    }
    const item = /** @type {Envelope | AgentServerError} */ (state.items.shift());
    if (item instanceof AgentServerError) throw item;
    return item;
  }

  /**
   * Routes one frame from the server. Never throws.
   *
   * @param {string} frame
   * @param {boolean} [resumed]
   */
  #dispatch(frame, resumed = false) {
    try {
      if (frame.startsWith("<message>")) {
        const envelope = Envelope.parse(frame, { resumed });
        this.#deliver(envelope.thread, envelope);
      } else if (frame.startsWith("<error") || frame.startsWith("<access-denied")) {
        this.#refusal(errorFromFrame(frame));
      } else if (frame.startsWith("<catalog")) {
        this.#setCatalog(parseCatalog(frame).catalog);
      } else if (frame.startsWith("<privileged-result")) {
        const result = PrivilegedResult.parse(frame);
        const command = this.#command;
        if (command && !command.result.done && (result.id === null || result.id === command.id)) {
          command.result.resolve(result);
        } else {
          this.#unclaim(frame);
        }
      } else {
        this.#unclaim(frame);
      }
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
      this.#unclaim(frame);
    }
  }

  /** @param {string} frame */
  #unclaim(frame) {
    this.unclaimed.push(frame);
    if (this.unclaimed.length > MAX_UNCLAIMED) this.unclaimed.shift();
    this.#call(this.onUnclaimed, frame);
  }

  /**
   * @param {string} threadId
   * @param {Envelope | AgentServerError} item
   */
  #deliver(threadId, item) {
    const state = this.#threads.get(threadId);
    if (state) {
      state.push(item);
      return;
    }
    const pending = this.#pending;
    if (pending && !this.#seen.has(threadId)) {
      // The first frame of a thread not seen before: the thread of the
      // message holding the start slot.
      this.#remember(threadId);
      if (!pending.result.done) {
        pending.result.resolve([threadId, item]);
        this.#release(pending);
        return;
      }
      // Its asker gave up: the frame waits with its thread.
      this.#release(pending);
    }
    this.#thread(threadId).push(item);
  }

  /** @param {AgentServerError} error */
  #refusal(error) {
    if (BAD_MESSAGE_CODES.has(error.code)) this.#limiter?.recordBad();
    if (error instanceof FramesDropped) {
      this.framesDropped += error.count;
      return;
    }
    if (error.thread !== null) {
      this.#deliver(error.thread, error);
      return;
    }
    const pending = this.#pending;
    if (pending) {
      pending.result.resolve(error);
      this.#release(pending);
      return;
    }
    if (this.#lastContinuation !== null) {
      // The server names no thread on these refusals: the one continued
      // last is the best guess.
      this.#thread(this.#lastContinuation).push(error);
      this.#lastContinuation = null;
      return;
    }
    this.#unclaim(error.frame);
  }

  /** @param {Catalog} catalog */
  #setCatalog(catalog) {
    const previous = this.#catalog;
    if (catalog.sessionTimeout === null && previous) catalog.sessionTimeout = previous.sessionTimeout;
    this.#catalog = catalog;
    this.#tags = catalog.tags;
    const waiters = this.#catalogWaiters;
    this.#catalogWaiters = [];
    for (const waiter of waiters) waiter.resolve();
    this.#call(this.onCatalog, catalog);
  }

  /**
   * Calls an application's callback; what it throws is reported, not
   * propagated into the client.
   *
   * @template A
   * @param {((arg: A) => void) | null} callback
   * @param {A} arg
   */
  #call(callback, arg) {
    if (!callback) return;
    try {
      callback(arg);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  /**
   * @param {Status} status
   * @param {StatusDetail} detail
   */
  #status(status, detail) {
    const callback = this.onStatus;
    if (callback) this.#call((/** @type {StatusDetail} */ d) => callback(status, d), detail);
  }

  // ------------------------------------------------------------ connection

  /**
   * Opens a WebSocket to the server.
   *
   * @returns {Promise<WebSocket>}
   */
  #open() {
    return new Promise((resolve, reject) => {
      /** @type {WebSocket} */
      let ws;
      try {
        ws = new this.#WebSocket(this.url);
      } catch (error) {
        reject(error);
        return;
      }
      const timer = setTimeout(() => {
        ws.onopen = ws.onclose = null;
        ws.close();
        reject(new Error(`no connection within ${this.openTimeout} ms`));
      }, this.openTimeout);
      // Some WebSocket implementations (Node 20's) report a failed
      // connection by an error event alone, with no close event.
      ws.onerror = () => {
        clearTimeout(timer);
        reject(new Error("the connection failed"));
      };
      ws.onopen = () => {
        clearTimeout(timer);
        ws.onopen = null;
        ws.onerror = () => {};
        resolve(ws);
      };
      ws.onclose = (event) => {
        clearTimeout(timer);
        reject(new Closed(event.code, event.reason || "the connection failed"));
      };
    });
  }

  /**
   * Sleeps `ms`, or less when the client closes.
   *
   * @param {number} ms
   * @returns {Promise<void>}
   */
  #sleep(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, Math.min(MAX_TIMER_MS, ms));
      this.#sleepers.add(wake);
    });
  }

  /**
   * The code for login attempt `attempt`: from the secret, in a time step
   * this program has not used for the user yet (waiting for it if need
   * be), or as a person typed it.
   *
   * @param {number} attempt
   * @param {boolean} relogin
   * @returns {Promise<string>}
   */
  async #nextCode(attempt, relogin) {
    if (this.#totp) {
      const { step, waitMs } = this.#steps.reserve(this.url, this.user);
      if (waitMs > 0) {
        this.#status("connecting", { waitMs });
        await this.#sleep(waitMs);
      }
      return this.#totp.atStep(step);
    }
    const code = /** @type {CodeSource} */ (this.#code);
    if (typeof code === "function") return String(await code({ user: this.user, attempt, relogin })).trim();
    if (this.#codeUsed) {
      throw new AuthenticationFailed("a typed code serves one login: a new login needs a new code (give `code` as a function)");
    }
    this.#codeUsed = true;
    return code.trim();
  }

  /**
   * A fresh login: a new session.
   *
   * @param {boolean} relogin
   * @returns {Promise<{ ws: WebSocket, handshake: Handshake, catalog: Catalog, token: string | null }>}
   */
  async #login(relogin) {
    let failure = new AuthenticationFailed("authentication failed");
    const attempts = this.#totp || typeof this.#code === "function" ? this.loginAttempts : 1;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      this.#status("connecting", {});
      const code = await this.#nextCode(attempt, relogin);
      if (this.#closing) throw new ConnectionLost("the client was closed");
      let ws;
      try {
        ws = await this.#open();
      } catch (error) {
        throw new ConnectionLost(`cannot connect to ${this.url}: ${error instanceof Error ? error.message : error}`);
      }
      const handshake = new Handshake(ws);
      try {
        ws.send(`<authenticate user="${escapeAttribute(this.user)}" totp="${escapeAttribute(code)}"/>`);
        const { catalog, token } = await handshake.wait(this.openTimeout);
        this.logins++;
        // A fresh session has nothing kept: what came before its catalog
        // belongs to no question of this client.
        for (const frame of handshake.kept) this.#unclaim(frame);
        handshake.kept = [];
        return { ws, handshake, catalog, token };
      } catch (error) {
        if (!(error instanceof Closed)) {
          ws.onclose = null;
          ws.close();
          throw new ConnectionLost(`no catalog after the login: ${error instanceof Error ? error.message : error}`);
        }
        if (error.reason === "too many connections") {
          throw new TooManyConnections(`${this.user} has too many connections open`);
        }
        if (error.reason !== "authentication failed") {
          throw new ConnectionLost(`the server closed the connection: ${error.message}`);
        }
        failure = new AuthenticationFailed(`authentication failed (attempt ${attempt})`);
      }
    }
    throw failure;
  }

  /**
   * Makes `ws` the connection: its frames go to the client.
   *
   * @param {WebSocket} ws
   * @param {Handshake} handshake
   * @param {Catalog} catalog
   * @param {string | null} token
   */
  #install(ws, handshake, catalog, token) {
    if (this.#closing) {
      ws.onmessage = ws.onclose = null;
      ws.close(1000);
      return;
    }
    this.#ws = ws;
    if (token !== null) this.#token = token;
    this.#limiter?.reset();
    this.#setCatalog(catalog);
    for (const frame of handshake.kept) this.#dispatch(frame, true);
    for (const frame of handshake.after) this.#dispatch(frame);
    ws.onmessage = (event) => {
      if (typeof event.data === "string") this.#dispatch(event.data);
    };
    ws.onclose = (event) => this.#onClose(ws, event.code, event.reason);
    if (handshake.closed) {
      // It closed while the catalog was on its way here.
      this.#onClose(ws, handshake.closed.code, handshake.closed.reason);
      return;
    }
    this.#setConnected(true);
  }

  /**
   * The connection is gone: resume, or end with the reason.
   *
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  #onClose(ws, code, reason) {
    if (ws !== this.#ws || this.#closing || this.#failure) return;
    this.#setConnected(false);
    let end = ending(reason);
    if (!end && !this.resume) end = new ConnectionLost(`connection closed: ${code} ${reason}`.trim());
    if (end) {
      this.#fail(end);
      return;
    }
    this.#status("reconnecting", { code, reason });
    this.#recover().catch((error) => this.#fail(asClientError(error)));
  }

  /**
   * Resumes the session on a new connection; or, when it cannot be resumed
   * and `relogin` is on, logs in to a new one.
   */
  async #recover() {
    const deadline = now() + this.resumeTimeout;
    let delay = this.reconnectDelay;
    let backoff = 50;
    let refused = false;
    while (!refused) {
      if (delay > 0) await this.#sleep(Math.min(delay, Math.max(0, deadline - now())));
      if (this.#closing) return;
      if (now() >= deadline) throw new ConnectionLost(`could not resume within ${this.resumeTimeout} ms`);
      delay = backoff;
      backoff = Math.min(backoff * 2, 2000);
      let ws;
      try {
        ws = await this.#open();
      } catch {
        continue;
      }
      const handshake = new Handshake(ws);
      try {
        ws.send(`<resume-session id="${escapeAttribute(this.sessionId)}" token="${escapeAttribute(this.#token ?? "")}"/>`);
        const { catalog, token } = await handshake.wait(this.openTimeout);
        if (this.#closing) {
          ws.onmessage = ws.onclose = null;
          ws.close(1000);
          return;
        }
        this.resumes++;
        this.#install(ws, handshake, catalog, token);
        this.#status("resumed", {});
        return;
      } catch (error) {
        if (error instanceof Closed) {
          refused = error.reason === "authentication failed";
        } else {
          ws.onmessage = ws.onclose = null;
          ws.close();
        }
      }
    }
    if (!this.relogin) throw new SessionLost("the server could not resume the session");
    this.#loseSession(
      new SessionLost("the session could not be resumed after the connection dropped; the client logs in again"),
    );
    this.#status("logging-in", {});
    const login = await this.#login(true);
    this.#install(login.ws, login.handshake, login.catalog, login.token);
    this.#status("connected", {});
  }

  /**
   * The session is gone: whatever waited on its threads fails.
   *
   * @param {SessionLost} error
   */
  #loseSession(error) {
    for (const state of this.#threads.values()) {
      state.failure = error;
      state.wake();
    }
    for (const [id, state] of this.#threads) {
      if (!state.items.length) this.#threads.delete(id);
    }
    this.#seen = new Set(this.#threads.keys());
    const pending = this.#pending;
    if (pending) {
      pending.result.resolve(error);
      this.#release(pending);
    }
    this.#lastContinuation = null;
    this.#command?.result.reject(error);
  }

  /**
   * The client is done: every wait ends with `error`.
   *
   * @param {AgentServerError} error
   */
  #fail(error) {
    if (this.#failure) return;
    this.#failure = error;
    this.#setConnected(false);
    for (const waiter of this.#connectedWaiters.splice(0)) waiter.resolve();
    for (const state of this.#threads.values()) state.wake();
    const pending = this.#pending;
    if (pending) {
      pending.result.resolve(error);
      this.#release(pending);
    }
    this.#command?.result.reject(error);
    for (const waiter of this.#catalogWaiters.splice(0)) waiter.reject(error);
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const wake of this.#sleepers) wake();
    this.#status("closed", { error });
  }
}

if (typeof Symbol.asyncDispose === "symbol") {
  /** `await using client = …` closes it (ending the session). */
  Object.defineProperty(Client.prototype, Symbol.asyncDispose, {
    value() {
      return this.close();
    },
  });
}
