// Runs the JavaScript examples of a documentation page against a real
// server, in order, each as written, one test each (the page is
// AGENTSERVER_DOC; `tests/js_client.rs` runs this file for
// docs/clients/js.md).
//
// The page's first `js` block holds the settings (SERVER, USER, SECRET);
// it runs in a folder laid out as `make run` leaves the repository
// (run/data/tls/cert.pem, run/svc.totp, and the signed twin.xml of the
// page's signed-command example). Every later block runs there too, as a
// program of its own (a node process, which ends when the example's module
// has run, or failed), with those settings pointed at the test server and
// at a user of its own (doc1, doc2, …: the server accepts one login per
// user and TOTP time step), `agentserver-client` at this library, and
// `<ask>` at the mock model server (`<ask endpoint='…'>`).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";

import { COMMANDS, LLM_ENDPOINT, SERVER, USERS } from "./support.js";

const PAGE = process.env.AGENTSERVER_DOC ?? "";
const CA = process.env.AGENTSERVER_CA ?? "";
const LIBRARY = pathToFileURL(fileURLToPath(new URL("../index.js", import.meta.url))).href;

/**
 * The `js` blocks of a Markdown page, with the line each starts on.
 *
 * @param {string} page
 * @returns {Array<{ line: number, source: string }>}
 */
function jsBlocks(page) {
  const blocks = [];
  /** @type {string[] | null} */
  let current = null;
  let start = 0;
  page.split("\n").forEach((line, index) => {
    const stripped = line.trimEnd();
    if (current === null && stripped === "```js") {
      current = [];
      start = index + 2;
    } else if (current !== null && stripped === "```") {
      blocks.push({ line: start, source: current.join("\n") + "\n" });
      current = null;
    } else if (current !== null) {
      current.push(line);
    }
  });
  return blocks;
}

/**
 * An example's source, as a module that runs against the test server.
 *
 * @param {string} source
 * @param {Record<string, string>} settings
 */
function prepare(source, settings) {
  const constants = Object.entries(settings)
    .map(([name, value]) => `const ${name} = ${JSON.stringify(value)};`)
    .join(" ");
  const body = source
    .replaceAll('from "agentserver-client"', `from ${JSON.stringify(LIBRARY)}`)
    .replaceAll("<ask>", `<ask endpoint='${LLM_ENDPOINT}'>`);
  return `${constants}\n${body}`;
}

/** Runs one example's module, and exits when it has run or failed. */
const RUNNER = `import(process.argv[2]).then(
  () => process.exit(0),
  (error) => { console.error(error); process.exit(1); },
);
`;

/**
 * Runs example `file` as a program of its own; its output is printed.
 *
 * @param {string} file
 */
async function runExample(file) {
  const flags = process.execArgv.filter((flag) => !flag.startsWith("--test"));
  const run = promisify(execFile);
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      [...flags, path.join(folder, "runner.mjs"), pathToFileURL(file).href],
      { cwd: folder, timeout: 90_000 },
    );
    process.stdout.write(stdout + stderr);
  } catch (error) {
    const failed = /** @type {{ stdout?: string, stderr?: string, message: string }} */ (error);
    assert.fail(`${failed.message}\n${failed.stdout ?? ""}${failed.stderr ?? ""}`);
  }
}

assert.ok(PAGE && SERVER && CA && COMMANDS && LLM_ENDPOINT, "docs.test.js needs the environment of tests/js_client.rs");
const blocks = jsBlocks(readFileSync(PAGE, "utf8"));
const [settingsBlock, ...examples] = blocks;
const spare = Object.keys(USERS)
  .filter((name) => name.startsWith("doc"))
  .sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
const folder = mkdtempSync(path.join(tmpdir(), "js-docs-"));

before(() => {
  mkdirSync(path.join(folder, "run/data/tls"), { recursive: true });
  copyFileSync(CA, path.join(folder, "run/data/tls/cert.pem"));
  writeFileSync(path.join(folder, "run/svc.totp"), `${USERS.svc}\n`);
  copyFileSync(path.join(COMMANDS, "twin.xml"), path.join(folder, "twin.xml"));
  writeFileSync(path.join(folder, "runner.mjs"), RUNNER);
});

after(() => {
  rmSync(folder, { recursive: true, force: true });
});

test("the page has its examples, and a user for each", () => {
  assert.ok(examples.length >= 8, `only ${blocks.length} js blocks in ${PAGE}`);
  assert.ok(spare.length >= examples.length, `${examples.length} examples need as many doc users, got ${spare}`);
});

test(`${path.basename(PAGE)}:${settingsBlock?.line}: the settings`, async () => {
  const file = path.join(folder, "settings.mjs");
  writeFileSync(file, `${settingsBlock.source}\nexport { SERVER, USER, SECRET };\n`);
  // The settings read files relative to the folder a program runs in.
  const home = process.cwd();
  process.chdir(folder);
  const settings = await import(pathToFileURL(file).href).finally(() => process.chdir(home));
  assert.match(settings.SERVER, /^wss:\/\//);
  assert.equal(settings.USER, "svc");
  assert.equal(settings.SECRET, USERS.svc);
});

examples.forEach(({ line, source }, index) => {
  const user = spare[index];
  test(`${path.basename(PAGE)}:${line}: the example, as ${user}`, async () => {
    const file = path.join(folder, `example-${line}.mjs`);
    writeFileSync(file, prepare(source, { SERVER, USER: user, SECRET: USERS[user] }));
    await runExample(file);
  });
});
