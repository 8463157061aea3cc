#!/usr/bin/env bash
# Builds the Python example agents into WebAssembly components:
#
#   example-agents/python/build.sh OUTDIR [NAME...]
#
# writes OUTDIR/NAME.wasm for every agent folder example-agents/python/NAME/
# holding an app.py (or only the NAMEs given). OUTDIR is relative to the
# current directory. Each agent is built with componentize-py from the repo's
# wit/ folder (package agentserver:agent), for the world named in the agent
# folder's `world` file (one line, e.g. `agent-http-keyvalue`), or the world
# `agent` when there is none; componentize-py generates the `wit_world`
# bindings itself, on the fly. componentize-py makes a component import every
# interface of its world, so pick the smallest world the agent needs.
#
# componentize-py bundles every file of the app's folder into the component
# and writes __pycache__ there while it pre-initializes the app, so each agent
# is built from a clean copy of its sources (tests left out) in
# target/python-agents/NAME/: the source tree stays clean and the same sources
# always make the same component.
#
# This script installs nothing: `make agent-tools` does.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 OUTDIR [NAME...]" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

pinned="$(sed -n 's/^componentize-py==\([^[:space:]]*\).*/\1/p' "$here/requirements.txt")"
installed="$(componentize-py --version 2>/dev/null | awk '{print $NF}' || true)"
if [ -z "$installed" ] || [ "$installed" != "$pinned" ]; then
    echo "error: the Python agents need componentize-py $pinned, found ${installed:-none}:" \
        "run \`make agent-tools\` (example-agents/python/install-tools.sh) first" >&2
    exit 1
fi

mkdir -p "$1"
out="$(cd "$1" && pwd)"
shift

if [ $# -eq 0 ]; then
    for app in "$here"/*/app.py; do
        set -- "$@" "$(basename "$(dirname "$app")")"
    done
fi

for name in "$@"; do
    dir="$here/$name"
    if [ ! -f "$dir/app.py" ]; then
        echo "error: no Python agent $name ($dir/app.py is missing)" >&2
        exit 1
    fi
    # componentize-py does not build reproducibly (each build has another
    # SHA-256), so a component newer than its sources is kept as it is.
    if [ -f "$out/$name.wasm" ] && [ -z "$(find "$dir" "$root/wit" "$here/requirements.txt" \
            -newer "$out/$name.wasm" -not -path '*/__pycache__*' -print -quit)" ]; then
        echo "componentize-py: $out/$name.wasm is up to date" >&2
        continue
    fi
    world=agent
    if [ -f "$dir/world" ]; then
        world="$(tr -d '[:space:]' < "$dir/world")"
        if [ -z "$world" ]; then
            echo "error: $dir/world is empty: it names the agent's world" >&2
            exit 1
        fi
    fi
    build="$root/target/python-agents/$name"
    rm -rf "$build"
    mkdir -p "$build"
    cp -pR "$dir/." "$build/"
    rm -f "$build/world"
    find "$build" \( -name __pycache__ -o -name 'test_*.py' \) -prune -exec rm -rf {} +
    tmp="$out/.$name.wasm.tmp"
    echo "componentize-py: $name -> $out/$name.wasm (world $world)" >&2
    (cd "$build" && componentize-py -q -d "$root/wit" -w "$world" componentize app -o "$tmp")
    mv -f "$tmp" "$out/$name.wasm"
done
