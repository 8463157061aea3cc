#!/usr/bin/env bash
# Builds the C example agents into OUTDIR/NAME.wasm, one component per folder
# example-agents/c/NAME/ holding NAME.c (with every other .c file there but
# the native tests, test_*.c):
#
#   wit-bindgen c        bindings for wit/agent.wit    -> target/c-agents/bindings/
#   clang-14 (wasi-libc) a wasm32-wasi reactor module   -> target/c-agents/NAME/core.wasm
#   wasm-tools component new --adapt wasi_snapshot_preview1=<reactor adapter>
#                        the component                  -> OUTDIR/NAME.wasm
#
# The world's type information goes in through the object file wit-bindgen
# writes beside the bindings (agent_component_type.o), linked into the module.
# The reactor adapter is the one shipped with the host's wasmtime release,
# written by the wasi-reactor-adapter crate (example-agents/c/adapter).
#
# Installs nothing: example-agents/c/install-tools.sh (`make agent-tools`)
# does, with the versions pinned in example-agents/c/tools.env.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tools.env
source example-agents/c/tools.env

missing() {
    echo "error: the C agents' toolchain is incomplete: $1." >&2
    echo "       Run \`make agent-tools\` (example-agents/c/install-tools.sh) to install it." >&2
    exit 1
}
command -v "$C_AGENT_CLANG" >/dev/null || missing "$C_AGENT_CLANG is not installed"
for package in $C_AGENT_DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
        || missing "the Debian package $package is not installed"
done
# check_tool TOOL VERSION: fails unless `TOOL --version` names VERSION.
check_tool() {
    has_version "$1" "$2" && return
    command -v "$1" >/dev/null || missing "$1 $2 is needed, and no $1 is on the PATH"
    missing "$1 $2 is needed, found \"$("$1" --version 2>&1 | head -n1 || true)\""
}
has_wit_bindgen || missing "wit-bindgen $WIT_BINDGEN_VERSION with the generators $WIT_BINDGEN_GENERATORS is needed"
check_tool "$WASM_TOOLS" "$WASM_TOOLS_VERSION"

build=target/c-agents
bindings=$build/bindings
adapter=$build/wasi_snapshot_preview1.reactor.wasm

rm -rf "$bindings"
if ! log=$(wit-bindgen c wit --world agent --out-dir "$bindings" 2>&1); then
    echo "$log" >&2
    exit 1
fi
# Rewrites the cached adapter only when the adapter crate's bytes differ.
cargo run -q --release -p wasi-reactor-adapter -- "$adapter"

built=0
for dir in example-agents/c/*/; do
    name=$(basename "$dir")
    [ -f "$dir$name.c" ] || continue
    sources=()
    for source in "$dir"*.c; do
        case "$(basename "$source")" in
            test_*.c) ;;
            *) sources+=("$source") ;;
        esac
    done
    work=$build/$name
    mkdir -p "$work"
    "$C_AGENT_CLANG" --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 \
        -Wall -Wextra -Werror -I"$bindings" -I"$dir" \
        "${sources[@]}" "$bindings/agent.c" "$bindings/agent_component_type.o" \
        -Wl,--strip-debug -o "$work/core.wasm"
    "$WASM_TOOLS" component new "$work/core.wasm" \
        --adapt "wasi_snapshot_preview1=$adapter" -o "$work/$name.wasm"
    "$WASM_TOOLS" validate "$work/$name.wasm"
    # Copied then renamed, so nobody reads half a component.
    cp "$work/$name.wasm" "$out/.$name.wasm.partial"
    mv -f "$out/.$name.wasm.partial" "$out/$name.wasm"
    echo "built $1/$name.wasm: $(wc -c <"$out/$name.wasm") bytes"
    built=$((built + 1))
done
[ "$built" -gt 0 ] || { echo "error: no C agent found in example-agents/c/" >&2; exit 1; }
