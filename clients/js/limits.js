/**
 * Staying within the server's limits: its flood limits (a token bucket per
 * connection and a count of bad messages), and its rule of one login per
 * user and TOTP time step.
 *
 * The server closes a connection (1008 `flooding`) and ends its session
 * past `message_burst` messages at once or `messages_per_second` sustained
 * (defaults 100 and 50), or past 20 messages refused as `access-denied`,
 * `malformed` or `bad-frame` within 10 seconds. {@link RateLimit} keeps a
 * client below both, with some headroom.
 *
 * The server accepts a code only for a time step later than the last one
 * it accepted for the user, so two logins within one 30-second step cannot
 * both succeed. {@link TotpSteps} hands out steps so that logins of this
 * program never reuse one, waiting for the next step when needed.
 *
 * @module
 */

import { TOTP_STEP_SECONDS } from "./totp.js";

/** The server's defaults (`messages_per_second`, `message_burst`; the bad-message limit and window are fixed). */
export const SERVER_MESSAGES_PER_SECOND = 50;
export const SERVER_MESSAGE_BURST = 100;
export const SERVER_MAX_BAD_MESSAGES = 20;
export const SERVER_BAD_WINDOW_MS = 10_000;

/**
 * How fast a client sends, per connection. The defaults are the server's
 * less 10%: a burst of 90, then 45 a second; at most 18 refused-as-bad
 * messages within 10 s, counting those whose verdict may still be on its
 * way (a message that started a thread until its first frame arrives, and
 * a continuation whose root tag is not in the catalog, for `verdictMs`).
 */
export class RateLimit {
  /**
   * @param {object} [options]
   * @param {number} [options.messagesPerSecond] sustained rate.
   * @param {number} [options.burst] messages that may go at once after a quiet spell.
   * @param {number} [options.maxBadMessages] bad messages allowed within `badWindowMs`.
   * @param {number} [options.badWindowMs] the window bad messages are counted over.
   * @param {number} [options.verdictMs] how long a continuation of a tag not in the catalog counts as possibly bad.
   */
  constructor({
    messagesPerSecond = SERVER_MESSAGES_PER_SECOND * 0.9,
    burst = SERVER_MESSAGE_BURST * 0.9,
    maxBadMessages = SERVER_MAX_BAD_MESSAGES - 2,
    badWindowMs = SERVER_BAD_WINDOW_MS,
    verdictMs = 1000,
  } = {}) {
    if (!(messagesPerSecond > 0) || !(burst >= 1) || !(maxBadMessages >= 1)) {
      throw new RangeError("a rate limit needs messagesPerSecond > 0, burst >= 1 and maxBadMessages >= 1");
    }
    this.messagesPerSecond = messagesPerSecond;
    this.burst = burst;
    this.maxBadMessages = maxBadMessages;
    this.badWindowMs = badWindowMs;
    this.verdictMs = verdictMs;
    Object.freeze(this);
  }

  /**
   * The limit for a server configured with `messages_per_second` and
   * `message_burst`, keeping `headroom` of each.
   *
   * @param {number} [messagesPerSecond]
   * @param {number} [messageBurst]
   * @param {{ headroom?: number }} [options]
   */
  static forServer(messagesPerSecond = SERVER_MESSAGES_PER_SECOND, messageBurst = SERVER_MESSAGE_BURST, { headroom = 0.9 } = {}) {
    return new RateLimit({
      messagesPerSecond: messagesPerSecond * headroom,
      burst: Math.max(1, messageBurst * headroom),
    });
  }
}

/** @returns {number} milliseconds, monotonic. */
const monotonic = () => performance.now();

/** The state of a {@link RateLimit} on one connection. */
export class Limiter {
  /**
   * @param {RateLimit} limit
   * @param {() => number} [clock] milliseconds, monotonic.
   */
  constructor(limit, clock = monotonic) {
    this.limit = limit;
    this.clock = clock;
    this.tokens = limit.burst;
    this.refilled = clock();
    /** @type {number[]} when bad messages were refused. */
    this.bad = [];
    /** @type {number[]} when possibly-bad continuations were sent. */
    this.continuations = [];
  }

  /** A new connection: the server starts it with a full bucket and no bad messages. */
  reset() {
    this.tokens = this.limit.burst;
    this.refilled = this.clock();
    this.bad = [];
    this.continuations = [];
  }

  /** The server refused a message as bad. */
  recordBad() {
    this.bad.push(this.clock());
  }

  /** A continuation that might be refused as bad was sent. */
  recordContinuation() {
    this.continuations.push(this.clock());
  }

  /**
   * Milliseconds to wait before the next message may go; 0 takes its token.
   *
   * @param {number} unresolved messages sent whose verdict is not known yet.
   */
  delay(unresolved) {
    const now = this.clock();
    const limit = this.limit;
    this.tokens = Math.min(limit.burst, this.tokens + ((now - this.refilled) / 1000) * limit.messagesPerSecond);
    this.refilled = now;
    while (this.bad.length && now - this.bad[0] >= limit.badWindowMs) this.bad.shift();
    while (this.continuations.length && now - this.continuations[0] >= limit.verdictMs) this.continuations.shift();
    let wait = 0;
    if (this.tokens < 1) wait = ((1 - this.tokens) / limit.messagesPerSecond) * 1000;
    const possiblyBad = this.bad.length + this.continuations.length + unresolved;
    if (possiblyBad + 1 > limit.maxBadMessages) {
      // Wait until enough of what counts ages out of its window.
      const ages = [
        ...this.bad.map((at) => limit.badWindowMs - (now - at)),
        ...this.continuations.map((at) => limit.verdictMs - (now - at)),
      ].sort((a, b) => a - b);
      const excess = possiblyBad + 1 - limit.maxBadMessages;
      // Only unresolved messages in the way: their verdicts will come.
      wait = Math.max(wait, excess <= ages.length ? Math.max(ages[excess - 1], 1) : 50);
    }
    if (wait > 0) return wait;
    this.tokens -= 1;
    return 0;
  }

  /**
   * Waits until a message may go and takes its token; `false` when that
   * would be after `deadline` (a `performance.now()` instant).
   *
   * @param {number} deadline
   * @param {() => number} unresolved
   * @returns {Promise<boolean>}
   */
  async acquire(deadline, unresolved) {
    for (;;) {
      const wait = this.delay(unresolved());
      if (wait === 0) return true;
      if (this.clock() + wait > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

/**
 * The TOTP time steps logins of this program have used, per server and
 * user, so that no step is used twice (the server would refuse the second
 * login as a replay). {@link TOTP_STEPS} is shared by every client unless
 * one is given its own.
 */
export class TotpSteps {
  /** @type {Map<string, number>} */
  #last = new Map();

  /** @param {() => number} [clock] Unix time, seconds. */
  constructor(clock = () => Date.now() / 1000) {
    this.clock = clock;
  }

  /**
   * Claims the next step for a login of `user` at `server`: the current
   * one if unused, else the one after the last used; and how many
   * milliseconds until it begins (0 for the current step).
   *
   * @param {string} server
   * @param {string} user
   * @returns {{ step: number, waitMs: number }}
   */
  reserve(server, user) {
    const now = this.clock();
    const current = Math.floor(now / TOTP_STEP_SECONDS);
    const key = `${server}\n${user}`;
    const step = Math.max(current, (this.#last.get(key) ?? current - 1) + 1);
    this.#last.set(key, step);
    return { step, waitMs: Math.max(0, (step * TOTP_STEP_SECONDS - now) * 1000) };
  }

  /**
   * The last step claimed for `user` at `server`, or `null`.
   *
   * @param {string} server
   * @param {string} user
   */
  used(server, user) {
    return this.#last.get(`${server}\n${user}`) ?? null;
  }
}

/** The steps every client of this program shares by default. */
export const TOTP_STEPS = new TotpSteps();
