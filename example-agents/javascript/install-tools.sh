#!/usr/bin/env bash
# Installs what builds the JavaScript example agents — componentize-js at the
# version package.json pins, exactly as package-lock.json records it — into
# example-agents/javascript/node_modules. A fast no-op when that version is
# already there. Needs node and npm.
#
# package.json also pins @bytecodealliance/preview2-shim: componentize-js
# 0.23.0 imports it at run time but declares it only as a devDependency, so
# without the pin it loads only when npm happens to hoist some copy. 0.25.0
# is the version jco-std (in the same tree) asks for as a peer.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir=example-agents/javascript
# Prints the pinned version and exits 1 when node_modules holds another one
# (or none).
check="
const pinned = require('./$dir/package.json').devDependencies['@bytecodealliance/componentize-js'];
let have = '';
try { have = require('./$dir/node_modules/@bytecodealliance/componentize-js/package.json').version; } catch {}
console.log(pinned);
process.exit(have === pinned ? 0 : 1);
"
if ! pinned=$(node -e "$check"); then
  echo "installing @bytecodealliance/componentize-js $pinned into $dir/node_modules"
  npm --prefix "$dir" ci --no-audit --no-fund --loglevel=error
fi
