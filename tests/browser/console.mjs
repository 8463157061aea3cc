// Drives the web console in headless Chromium as a person would, against
// the real server: log in with a typed code; type the content of a chosen
// tag (plain text, escaped; markup, kept) and see the answer pretty-printed
// with who sent it; continue a thread; see a repair note and errors set
// apart; watch a streamed answer grow in place; have the socket closed
// under the page and see it resume by itself, with the answer kept
// meanwhile; and use it at phone size. Screenshots go to OUTDIR
// (console-desktop.png, console-phone.png).
//
// Usage: node console.mjs URL USER CODE PHONE_USER PHONE_CODE LLM_ENDPOINT OUTDIR
// Exit 0 when every step passed (one "ok:" line each); otherwise 1 with the
// reason, the page's log and a screenshot (OUTDIR/failure.png).
import { chromium } from "playwright-core";

const [url, user, code, phoneUser, phoneCode, endpoint, outdir] = process.argv.slice(2);
if (!outdir) {
  console.error("usage: node console.mjs URL USER CODE PHONE_USER PHONE_CODE LLM_ENDPOINT OUTDIR");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 15_000;

/** Fails the run with `message` unless `condition` holds. */
function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Logs in on `page` and waits for the catalog. */
async function logIn(page, name, totp) {
  await page.goto(url);
  await page.fill("#user", name);
  await page.fill("#code", totp);
  await page.click("#connect");
  await page.locator('#status[data-state="connected"]').waitFor({ timeout: TIMEOUT });
  check(await page.locator("#compose").isVisible(), "the composer is not shown after the login");
}

/** Types `text` for `tag` (when given), checks what will be sent, and sends it with Enter. */
async function compose(page, { tag, text, expect, mode }) {
  if (tag) await page.selectOption("#tag", tag);
  await page.fill("#payload", text);
  const preview = await page.textContent("#preview");
  check(preview === expect, `for ${JSON.stringify(text)} the composer would send ${preview}, not ${expect}`);
  const chosen = await page.locator("input[name=mode]:checked").getAttribute("value");
  check(chosen === mode, `for ${JSON.stringify(text)} the mode is ${chosen}, not ${mode}`);
  await page.press("#payload", "Enter");
}

/** The newest thread's card (threads are shown newest first). */
const newest = (page) => page.locator("#log .thread").first();

/** Waits for an answer from `sender` whose pretty payload is `payload` in `card`. */
async function answer(card, sender, payload) {
  const entry = card.locator(`.entry.answer[data-sender="${sender}"]:not(.streaming)`).filter({ hasText: payload });
  await entry.first().waitFor({ timeout: TIMEOUT });
  return entry.first();
}

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let current = null;
try {
  // ------------------------------------------------------------ desktop
  const desktop = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 900 } });
  const page = (current = await desktop.newPage());
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  await logIn(page, user, code);
  console.log("ok: logged in with a typed code");

  // The content of the chosen tag, as a person types it.
  await compose(page, { tag: "calculate", text: "2 + 3 * 4", expect: "<calculate>2 + 3 * 4</calculate>", mode: "content" });
  let card = newest(page);
  const calc = await answer(card, "calc", "<result>14</result>");
  check((await calc.locator(".who").innerText()).includes("calc"), "the answer does not say who answered");
  check((await card.locator(".entry.out pre").innerText()) === "<calculate>2 + 3 * 4</calculate>", "the message sent is not shown");
  console.log("ok: content of <calculate> sent, answer <result>14</result> from calc");

  // Text is escaped.
  await compose(page, { tag: "echo", text: "fish & chips <3", expect: "<echo>fish &amp; chips &lt;3</echo>", mode: "content" });
  card = newest(page);
  await answer(card, "echo", "<echoed>fish &amp; chips &lt;3</echoed>");
  check((await card.locator(".entry.huh").count()) === 0, "escaped text needed a repair");
  console.log("ok: text escaped, no repair needed");

  // Markup goes inside the tag as it is; the delegation is answered by calc.
  await compose(page, {
    tag: "square-sum",
    text: "<n>3</n><n>4</n>",
    expect: "<square-sum><n>3</n><n>4</n></square-sum>",
    mode: "content",
  });
  await answer(newest(page), "calc", "<result>25</result>");
  console.log("ok: markup content delegated by the delegator, answered by calc");

  // A streamed answer grows in one entry, which the final answer settles.
  await page.evaluate(() => {
    let next = 0;
    window.growth = [];
    new MutationObserver((records) => {
      for (const record of records) {
        const entry = record.target;
        entry.growthId ??= ++next;
        window.growth.push([entry.growthId, record.oldValue]);
      }
    }).observe(document.getElementById("log"), {
      attributes: true,
      attributeOldValue: true,
      subtree: true,
      attributeFilter: ["data-parts"],
    });
  });
  const question = `<ask endpoint="${endpoint}">What is a component?</ask>`;
  await compose(page, { text: question, expect: question, mode: "xml" });
  const streamed = await answer(newest(page), "llm", "You said: What is a component?");
  const growth = await page.evaluate(() => window.growth);
  // The entry's part count went 0, 1, 2, … N, one partial at a time, and
  // the final answer settled that same entry.
  const [id, total] = await streamed.evaluate((entry) => [entry.growthId, Number(entry.dataset.parts)]);
  const steps = growth.filter(([entry]) => entry === id).map(([, old]) => old);
  const expected = [null, ...Array.from({ length: total }, (_, i) => String(i))];
  check(total >= 2 && JSON.stringify(steps) === JSON.stringify(expected), `the stream did not grow in place: ${JSON.stringify(growth)}`);
  check((await newest(page).locator(".entry.answer").count()) === 1, "the stream left more than one answer entry");
  console.log(`ok: ${total} <partial> frames grew one entry, settled by the <answer>`);

  // A thread continued from its card.
  await compose(page, { tag: "count", text: "", expect: "<count></count>", mode: "content" });
  card = newest(page);
  await answer(card, "counter", "<count-is>1</count-is>");
  const threads = await page.locator("#log .thread").count();
  await card.locator("button.continue").click();
  check(await page.locator("#continuing").isVisible(), "the composer does not say which thread it continues");
  await page.press("#payload", "Enter");
  await answer(card, "counter", "<count-is>2</count-is>");
  check((await page.locator("#log .thread").count()) === threads, "continuing made a new card");
  check((await card.locator(".entry.out").count()) === 2, "the card does not show both messages");
  await page.click("#new-thread");
  check(!(await page.locator("#continuing").isVisible()), "New thread did not stop continuing");
  console.log("ok: a thread continued: <count-is>2</count-is> in the same card");

  // Whole XML, dirty: repaired, and the repair note set apart.
  await compose(page, { text: "<echo>fish & chips</echo>", expect: "<echo>fish & chips</echo>", mode: "xml" });
  card = newest(page);
  await answer(card, "echo", "<echoed>fish &amp; chips</echoed>");
  const huh = card.locator(".entry.huh");
  check((await huh.innerText()).includes("escaped a bare &"), "the repair note is not shown apart");
  console.log("ok: whole XML repaired, <huh> note shown apart");

  // Errors, set apart: a tag the user may not send, and an agent failure.
  await compose(page, { text: "<secret/>", expect: "<secret/>", mode: "xml" });
  const denied = newest(page).locator('.entry.error[data-code="access-denied"]');
  await denied.waitFor({ timeout: TIMEOUT });
  check((await denied.innerText()).includes("You may not send <secret>"), "the denial does not say what was denied");
  await compose(page, {
    tag: "square-sum",
    text: "<n>3</n><n>three</n>",
    expect: "<square-sum><n>3</n><n>three</n></square-sum>",
    mode: "content",
  });
  const failed = newest(page).locator('.entry.error[data-code="agent-failed"]');
  await failed.waitFor({ timeout: TIMEOUT });
  check((await failed.innerText()).includes("delegator failed"), "the failure does not name the agent");
  console.log("ok: access-denied and agent-failed shown apart");

  // The socket closed under the page: it resumes by itself, without a code,
  // and the answer produced meanwhile arrives with the resume.
  const before = await page.evaluate(() => window.agentserverConsole.client.sessionId);
  await compose(page, { text: '<hold ms="300"/>', expect: '<hold ms="300"/>', mode: "xml" });
  await page.evaluate(() => window.agentserverConsole.client.websocket.close());
  await page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: TIMEOUT });
  await page.locator('#status[data-state="connected"]').waitFor({ timeout: TIMEOUT });
  const held = await answer(newest(page), "hostile", "<held/>");
  check(await held.locator(".badge.resumed").isVisible(), "the answer kept during the drop is not marked as delivered on resume");
  const after = await page.evaluate(() => {
    const client = window.agentserverConsole.client;
    return { session: client.sessionId, logins: client.logins, resumes: client.resumes };
  });
  check(
    after.session === before && after.logins === 1 && after.resumes === 1,
    `not resumed in place: ${JSON.stringify(after)} (session was ${before})`,
  );
  check(await page.locator("#login").isHidden(), "the page asked for a code to resume");
  console.log("ok: the socket was closed under the page; the session resumed, the kept answer shown");

  check((await page.locator("#log .thread").count()) === 9, `expected 9 threads, saw ${await page.locator("#log .thread").count()}`);
  check(pageErrors.length === 0, `errors on the page: ${pageErrors.join("; ")}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${outdir}/console-desktop.png` });

  // --------------------------------------------------------------- phone
  const phone = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 390, height: 844 },
    isMobile: true,
    hasTouch: true,
  });
  const small = (current = await phone.newPage());
  await logIn(small, phoneUser, phoneCode);
  await compose(small, { tag: "calculate", text: "2 + 3 * 4", expect: "<calculate>2 + 3 * 4</calculate>", mode: "content" });
  await answer(newest(small), "calc", "<result>14</result>");
  await compose(small, { tag: "square-sum", text: "<n>3</n><n>4</n>", expect: "<square-sum><n>3</n><n>4</n></square-sum>", mode: "content" });
  await answer(newest(small), "calc", "<result>25</result>");
  const width = await small.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  check(width[0] <= width[1], `the page is wider than the phone: ${width[0]} > ${width[1]}`);
  const button = await small.locator("#send").boundingBox();
  check(button && button.height >= 36, "the send button is too small to tap");
  await small.evaluate(() => window.scrollTo(0, 0));
  await small.screenshot({ path: `${outdir}/console-phone.png` });
  console.log("ok: at 390x844 the page fits, and answers");
} catch (error) {
  console.error(String(error));
  if (current) {
    const log = await current.locator("#log").innerText().catch(() => "?");
    const status = await current.locator("#status").innerText().catch(() => "?");
    console.error(`page log:\n${log}\nstatus: ${status}`);
    await current.screenshot({ path: `${outdir}/failure.png`, fullPage: true }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
