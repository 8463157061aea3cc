#!/usr/bin/env bash
# Builds the Go example agents into OUTDIR/NAME.wasm, one component per
# folder example-agents/go/NAME/ holding a Go module `wit_component` whose
# package export_wit_world implements the world's `handle`, most simply with
# the package `agent` of guest-sdk/go. The world is `agent` unless the file
# NAME/wit-world names another (agent-http: then guest-sdk/go/wasihttp, an
# http.RoundTripper over wasi:http, comes along too):
#
#   copy the folder, and guest-sdk/go/agent into it   -> target/go-agents/NAME/
#   wit-bindgen go wit --world WORLD  the bindings, next to the agent's code
#                       (its go.mod gets a `replace` to the support package)
#   GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared
#                                     a wasip1 reactor module -> core.wasm
#   wasm-tools component embed wit --world WORLD       -> embedded.wasm
#   wasm-tools component new --adapt wasi_snapshot_preview1=<reactor adapter>
#                                     the component            -> OUTDIR/NAME.wasm
#
# The support package links to runtime.sbrk, which Go refuses unless the
# linker is told -checklinkname=0. The reactor adapter is the one shipped
# with the host's wasmtime release (example-agents/c/adapter), as for C.
# With NAMES, builds only those agents.
#
# Installs nothing and fetches nothing (GOPROXY=off):
# example-agents/go/install-tools.sh (`make agent-tools`) installs the
# toolchain pinned in example-agents/go/tools.env.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 OUTDIR [NAME...]" >&2
    exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
shift
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd)
# shellcheck source=tools.env
source example-agents/go/tools.env

missing() {
    echo "error: the Go agents' toolchain is incomplete: $1." >&2
    echo "       Run \`make agent-tools\` (example-agents/go/install-tools.sh) to install it." >&2
    exit 1
}
has_go || missing "Go $GO_VERSION is needed in $GO_VENV"
has_wit_bindgen || missing "wit-bindgen $WIT_BINDGEN_VERSION with the generators $WIT_BINDGEN_GENERATORS is needed"
has_version "$WASM_TOOLS" "$WASM_TOOLS_VERSION" || missing "wasm-tools $WASM_TOOLS_VERSION is needed in $WASM_TOOLS_DIR"
[ -f "$GO_WIT_PKG/go.mod" ] || missing "the Go support package is needed in $GO_WIT_PKG"
# gofmt, beside go, formats the generated bindings.
PATH="$("$GO" env GOROOT)/bin:$PATH"
go=$root/$GO

build=target/go-agents
adapter=$build/wasi_snapshot_preview1.reactor.wasm
mkdir -p "$build"
# Rewrites the cached adapter only when the adapter crate's bytes differ.
cargo run -q --release -p wasi-reactor-adapter -- "$adapter"

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for dir in example-agents/go/*/; do
        [ -d "${dir}export_wit_world" ] && names+=("$(basename "$dir")")
    done
fi
[ ${#names[@]} -gt 0 ] || { echo "error: no Go agent found in example-agents/go/" >&2; exit 1; }

for name in "${names[@]}"; do
    src=example-agents/go/$name
    [ -d "$src/export_wit_world" ] || { echo "error: $src/export_wit_world is not there" >&2; exit 1; }
    work=$build/$name
    rm -rf "$work"
    mkdir -p "$work"
    cp -R "$src/." "$work/"
    rm -f "$work/go.mod" "$work/go.sum" "$work/wit-world"
    world=agent
    [ -f "$src/wit-world" ] && world=$(tr -d '[:space:]' <"$src/wit-world")
    cp -R guest-sdk/go/agent "$work/agent"
    case "$world" in
        *http*) cp -R guest-sdk/go/wasihttp "$work/wasihttp" ;;
    esac
    if ! log=$(wit-bindgen go wit --world "$world" --out-dir "$work" 2>&1); then
        echo "$log" >&2
        exit 1
    fi
    echo "replace go.bytecodealliance.org/pkg $GO_WIT_PKG_VERSION => $root/$GO_WIT_PKG" >>"$work/go.mod"
    (cd "$work" && GOOS=wasip1 GOARCH=wasm "$go" build -trimpath -buildmode=c-shared \
        -ldflags='-checklinkname=0 -s -w' -o core.wasm .)
    "$WASM_TOOLS" component embed wit --world "$world" "$work/core.wasm" -o "$work/embedded.wasm"
    "$WASM_TOOLS" component new "$work/embedded.wasm" \
        --adapt "wasi_snapshot_preview1=$adapter" -o "$work/$name.wasm"
    "$WASM_TOOLS" validate "$work/$name.wasm"
    # Copied then renamed, so nobody reads half a component.
    cp "$work/$name.wasm" "$out/.$name.wasm.partial"
    mv -f "$out/.$name.wasm.partial" "$out/$name.wasm"
    echo "built $out/$name.wasm: $(wc -c <"$out/$name.wasm") bytes"
done
