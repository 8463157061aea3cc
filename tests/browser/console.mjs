// Drives the web console in headless Chromium: log in with a TOTP code,
// pick `calculate`, send <calculate>2+2</calculate>, wait for the answer.
//
// Usage: node console.mjs URL USER CODE SCREENSHOT
// Exit 0 when the answer `4` is shown; otherwise 1 with the reason.
import { chromium } from "playwright-core";

const [url, user, code, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(url);
  await page.fill("#user", user);
  await page.fill("#code", code);
  await page.click("#connect");
  await page.waitForFunction(() => document.getElementById("status").textContent === "connected", null, { timeout: 10000 });
  await page.selectOption("#tag", "calculate");
  await page.fill("#payload", "<calculate>2+2</calculate>");
  await page.click("#send");
  const answer = page.locator(".thread .frame", { hasText: "<result>4</result>" });
  await answer.first().waitFor({ timeout: 10000 });
  const threads = await page.locator(".thread").count();
  if (threads !== 1) throw new Error(`expected one thread in the log, saw ${threads}`);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log("answer shown: " + (await answer.first().textContent()));
} catch (error) {
  console.error(String(error));
  const page = browser.contexts()[0]?.pages()[0];
  if (page) console.error("page log:\n" + (await page.locator("#log").innerText().catch(() => "?")) + "\nstatus: " + (await page.locator("#status").innerText().catch(() => "?")));
  if (page && screenshot) await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
