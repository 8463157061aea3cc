#!/usr/bin/env bash
# Runs the native tests of the Go example agents' logic: in each agent's
# module (example-agents/go/NAME), `go vet` and `go test` over every package
# but export_wit_world, the glue to the generated bindings (which exist only
# at build time); and checks that every Go file of the agents and the guest
# SDK is as gofmt writes it. With the pinned Go of example-agents/go/tools.env.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd)
# shellcheck source=tools.env
source example-agents/go/tools.env
has_go || {
    echo "error: Go $GO_VERSION is needed in $GO_VENV; run \`make agent-tools\`" >&2
    exit 1
}
go=$root/$GO

status=0
# Every Go file as gofmt writes it, the guest SDK's included.
unformatted=$("$("$go" env GOROOT)/bin/gofmt" -l example-agents/go guest-sdk/go)
if [ -n "$unformatted" ]; then
    echo "not formatted by gofmt (run gofmt -w on them):" >&2
    echo "$unformatted" >&2
    status=1
fi
for dir in example-agents/go/*/; do
    [ -f "${dir}go.mod" ] || continue
    packages=()
    for package in "$dir"*/; do
        case "$(basename "$package")" in
            export_wit_world) ;;
            *) ls "$package"*.go >/dev/null 2>&1 && packages+=("./$(basename "$package")") ;;
        esac
    done
    [ ${#packages[@]} -gt 0 ] || continue
    echo "== $dir: ${packages[*]}"
    (cd "$dir" && "$go" vet "${packages[@]}" && "$go" test "${packages[@]}") || status=1
done
exit $status
