#!/usr/bin/env bash
# Installs what the C example agents need to build, when missing: clang-14,
# wasm-ld, wasi-libc and the wasm32 compiler-rt builtins from Debian, then
# the component tools the C and Go agents share (wit-bindgen-cli and
# wasm-tools, example-agents/install-component-tools.sh). Each step
# says what it installs and about how long it takes. Idempotent: a fast no-op
# when everything is present.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tools.env
source example-agents/c/tools.env

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

missing=()
for package in $C_AGENT_DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-tools: apt-get install ${missing[*]} (the C compiler and C library for wasm, ~300 MB, about a minute)"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

bash example-agents/install-component-tools.sh
