// Builds every JavaScript example agent into a WebAssembly component.
//
//   node example-agents/javascript/build.mjs OUTDIR
//
// An agent is a folder NAME/ here holding NAME.js, the module that exports
// the world's `handle`; it becomes OUTDIR/NAME.wasm, built by componentize-js
// against the repository's wit/ folder, for the world named in the folder's
// `world` file (one line, e.g. `agent-http`), or the world `agent` when there
// is none. The world also decides which engine features are on (see
// WORLD_FEATURES). Installs nothing: componentize-js comes from
// `make agent-tools` (example-agents/javascript/install-tools.sh).

import { readFile, readdir, mkdir, writeFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const witPath = join(repo, 'wit');

// Every WASI feature the engine can do without. The agents only compute on
// the payload they are given: no console, no clocks or timers, no random
// numbers, no fetch. Each one left on would add WASI imports to the
// component — attack surface and instantiation cost — and with all of them
// off the component imports only the world's own `host` interface. (Errors
// are not printed either: the agents catch them and return a failure.)
const ALL_FEATURES = ['stdio', 'random', 'clocks', 'http', 'fetch-event'];

// The features each world of wit/agent.wit turns back on. `http` is the
// engine's `fetch()`, over wasi:http/outgoing-handler, which only the
// worlds that import that interface may use (the host serves it to agents
// with an HTTP grant). `fetch-event` (serving incoming requests) stays off:
// no world exports wasi:http/incoming-handler. componentize-js makes a
// component import every interface of its world, so a keyvalue world
// imports wasi:keyvalue whatever the module uses.
const WORLD_FEATURES = {
  agent: [],
  'agent-http': ['http'],
  'agent-keyvalue': [],
  'agent-http-keyvalue': ['http'],
};

function die(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(1);
}

async function loadComponentize() {
  const pkg = JSON.parse(await readFile(join(here, 'package.json'), 'utf8'));
  const pinned = pkg.devDependencies['@bytecodealliance/componentize-js'];
  const installed = join(here, 'node_modules/@bytecodealliance/componentize-js/package.json');
  const version = existsSync(installed)
    ? JSON.parse(await readFile(installed, 'utf8')).version
    : null;
  if (version !== pinned) {
    die(
      `@bytecodealliance/componentize-js ${pinned} is ${version ? `not installed (found ${version})` : 'not installed'}` +
        ` in ${relative(process.cwd(), join(here, 'node_modules')) || '.'}: run \`make agent-tools\`` +
        ' (or example-agents/javascript/install-tools.sh) first',
    );
  }
  // Resolved from this file's folder, so from its node_modules.
  const { componentize } = await import('@bytecodealliance/componentize-js');
  return { componentize, version };
}

/** The world an agent folder names in its `world` file, or `agent`. */
async function worldOf(folder) {
  const file = join(folder, 'world');
  if (!existsSync(file)) return 'agent';
  const world = (await readFile(file, 'utf8')).trim();
  if (!world) die(`${file} is empty: it names the agent's world`);
  if (!Object.hasOwn(WORLD_FEATURES, world)) {
    die(`${file} names the world \`${world}\`, not one of ${Object.keys(WORLD_FEATURES).join(', ')}`);
  }
  return world;
}

async function findAgents() {
  const agents = [];
  for (const entry of await readdir(here, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === 'node_modules') continue;
    const folder = join(here, entry.name);
    const source = join(folder, `${entry.name}.js`);
    if (!existsSync(source)) continue;
    const world = await worldOf(folder);
    const enabled = WORLD_FEATURES[world];
    const disableFeatures = ALL_FEATURES.filter((f) => !enabled.includes(f));
    agents.push({ name: entry.name, source, world, disableFeatures });
  }
  return agents.sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The newest modification time of `path`, a file or a folder's files. */
async function newest(path) {
  const info = await stat(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let latest = 0;
  for (const entry of await readdir(path, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.endsWith('.wasm')) continue;
    latest = Math.max(latest, await newest(join(path, entry.name)));
  }
  return latest;
}

/** Whether `out` exists and is newer than everything in `sources`. */
async function upToDate(out, sources) {
  if (!existsSync(out)) return false;
  const built = (await stat(out)).mtimeMs;
  for (const source of sources) {
    if ((await newest(source)) > built) return false;
  }
  return true;
}

async function main() {
  const [outArg] = process.argv.slice(2);
  if (!outArg || process.argv.length > 3) {
    die('usage: node example-agents/javascript/build.mjs OUTDIR');
  }
  const outDir = resolve(outArg);
  const { componentize, version } = await loadComponentize();
  const agents = await findAgents();
  if (agents.length === 0) die(`no agents (NAME/NAME.js) in ${here}`);
  await mkdir(outDir, { recursive: true });

  const cwd = process.cwd();
  console.log(`componentize-js ${version}; features off unless the world needs them: ${ALL_FEATURES.join(', ')}`);
  for (const { name, source, world, disableFeatures } of agents) {
    const out = join(outDir, `${name}.wasm`);
    // componentize-js does not build reproducibly (each build has another
    // SHA-256), so a component newer than its sources is kept as it is.
    if (await upToDate(out, [dirname(source), witPath, join(here, 'package-lock.json')])) {
      console.log(`${name}: ${relative(cwd, out)} is up to date`);
      continue;
    }
    const started = process.hrtime.bigint();
    // componentize-js lets the engine read (while it pre-initializes) the
    // files under the current directory when the source is inside it: keep
    // that to the agent's own folder.
    process.chdir(dirname(source));
    let component;
    try {
      ({ component } = await componentize({
        sourcePath: source,
        witPath,
        worldName: world,
        disableFeatures,
      }));
    } catch (error) {
      die(`${name}: ${error.message ?? error}`);
    } finally {
      process.chdir(cwd);
    }
    await writeFile(out, component);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const { size } = await stat(out);
    const mib = (size / (1 << 20)).toFixed(1);
    const shown = relative(cwd, out).startsWith('..') ? out : relative(cwd, out);
    const on = ALL_FEATURES.filter((f) => !disableFeatures.includes(f));
    const how = `world ${world}${on.length ? `, features ${on.join(', ')}` : ''}`;
    console.log(`${name}: ${shown} ${size} bytes (${mib} MiB, ${how}) in ${(ms / 1000).toFixed(1)} s`);
  }
}

await main();
