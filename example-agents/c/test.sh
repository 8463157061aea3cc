#!/usr/bin/env bash
# Builds and runs the native tests of the C example agents' pure logic
# (each example-agents/c/NAME/test_*.c with the other .c files of NAME but
# NAME.c, the agent itself), with the machine's C compiler and sanitizers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

cc=${CC:-gcc}
build=target/c-agents/native
mkdir -p "$build"
# Address and undefined-behaviour sanitizers where the compiler has them.
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all"
if ! echo 'int main(void){return 0;}' | "$cc" $sanitize -x c - -o "$build/probe" 2>/dev/null; then
    sanitize=""
fi
rm -f "$build/probe"

status=0
for dir in example-agents/c/*/; do
    name=$(basename "$dir")
    for test in "$dir"test_*.c; do
        [ -e "$test" ] || continue
        sources=()
        for source in "$dir"*.c; do
            case "$(basename "$source")" in
                "$name.c" | test_*.c) ;;
                *) sources+=("$source") ;;
            esac
        done
        binary="$build/$name-$(basename "$test" .c)"
        # shellcheck disable=SC2086
        "$cc" -std=c11 -O1 -g -Wall -Wextra -Werror $sanitize -I"$dir" \
            "$test" "${sources[@]}" -o "$binary"
        echo "== $test"
        "$binary" || status=1
    done
done
exit $status
