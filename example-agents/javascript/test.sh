#!/usr/bin/env bash
# Tests the JavaScript example agents' logic under plain Node (no
# componentize-js needed): every *.test.js beside the agents.
set -euo pipefail
cd "$(dirname "$0")"
mapfile -t tests < <(find . -path ./node_modules -prune -o -name '*.test.js' -print | sort)
node --test "${tests[@]}"
