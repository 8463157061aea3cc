#!/usr/bin/env bash
# Runs the unit tests of the Python example agents' pure logic with plain
# CPython (no component, no bindings). Run from anywhere.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."
for agent in stats llm; do
    python3 -m unittest discover -s "example-agents/python/$agent" "$@"
done
