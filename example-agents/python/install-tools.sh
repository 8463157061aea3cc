#!/usr/bin/env bash
# Installs the tools the Python example agents are built with (componentize-py,
# pinned in requirements.txt). Idempotent: a no-op when the pinned version is
# already on PATH. Run from anywhere; `make agent-tools` calls it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."

requirements=example-agents/python/requirements.txt
pinned="$(sed -n 's/^componentize-py==\([^[:space:]]*\).*/\1/p' "$requirements")"
if [ -z "$pinned" ]; then
    echo "install-tools.sh: no componentize-py==VERSION pin in $requirements" >&2
    exit 1
fi

installed="$(componentize-py --version 2>/dev/null | awk '{print $NF}' || true)"
if [ "$installed" = "$pinned" ]; then
    exit 0
fi

echo "installing componentize-py $pinned (found: ${installed:-none})" >&2
python3 -m pip install --quiet --disable-pip-version-check -r "$requirements"

installed="$(componentize-py --version 2>/dev/null | awk '{print $NF}' || true)"
if [ "$installed" != "$pinned" ]; then
    echo "install-tools.sh: installed componentize-py $pinned, but \`componentize-py --version\`" \
        "reports '${installed:-nothing}': is pip's script folder on PATH?" >&2
    exit 1
fi
