#!/usr/bin/env bash
# Two organisms on loopback, two owners, one signed link (docs/federation.md).
#
#   deploy/federation-demo.sh        (or `make federation-demo`)
#
# Organism A (an `echo` agent, port 8771) and organism B (a `calculate`
# agent, port 8772) each get their own owner identity, users and data in
# run/federation/a and run/federation/b (made afresh each time). Both are
# started with `agentserver run`; each owner certifies their node key for
# `audit,federation` and signs a `federation-link` naming the other
# organism: A sends `calculate` to B and accepts `echo`, B sends `echo` to
# A and accepts `calculate`. Then A's user `demo` sends <calculate> and gets
# B's answer from `B-FINGERPRINT/calc`, and B's user `demo` sends <echo>
# and gets A's from `A-FINGERPRINT/echo`. The servers serve until Ctrl-C.
#
# Environment: FEDERATION_DEMO_ONCE=1 stops both servers and exits once the
# answers are printed; FEDERATION_PORT_A, FEDERATION_PORT_B the ports;
# AGENTSERVER the binary (target/debug/agentserver); AGENTS_DIR where
# echo.wasm and calculator.wasm are (target/agents, `make rust-agents`).
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "${BASH_SOURCE[0]}")/.."
agentserver=${AGENTSERVER:-target/debug/agentserver}
agents_dir=${AGENTS_DIR:-target/agents}
port_a=${FEDERATION_PORT_A:-8771}
port_b=${FEDERATION_PORT_B:-8772}
once=${FEDERATION_DEMO_ONCE:-0}
root=run/federation

say() { echo "federation-demo: $*"; }
fail() {
    echo "federation-demo: $*" >&2
    exit 1
}

[ -x "$agentserver" ] || fail "no $agentserver: run \`make build\` first"
for wasm in echo calculator; do
    [ -f "$agents_dir/$wasm.wasm" ] || fail "no $agents_dir/$wasm.wasm: run \`make rust-agents\` first"
done
for port in "$port_a" "$port_b"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port is in use (another demo still running?); set FEDERATION_PORT_A/FEDERATION_PORT_B"
    fi
done

# Fresh organisms each time; compiled components are kept between runs.
rm -rf "$root/a" "$root/b"
mkdir -p "$root/a" "$root/b" "$root/compiled"
agents_abs=$(cd "$agents_dir" && pwd)
compiled_abs=$(cd "$root/compiled" && pwd)

# organism DIR PORT AGENT COMPONENT TAG: the owner's key pair, the users
# (`owner` carries the signed commands, `demo` is the script's, `you` is
# left for a person to log in as) and the configuration. Prints the
# organism's fingerprint.
organism() {
    local dir=$1 port=$2 agent=$3 component=$4 tag=$5 other=$6
    "$agentserver" identity generate --out "$dir" 2>>"$dir/setup.log" | sed -n 's/^public key sha256 //p'
    "$agentserver" user add owner --allow "$tag" --users "$dir/users.toml" \
        --secret-out "$dir/owner.totp" >>"$dir/setup.log"
    "$agentserver" user add demo --allow "$other" --users "$dir/users.toml" \
        --secret-out "$dir/demo.totp" >>"$dir/setup.log"
    "$agentserver" user add you --allow "$tag,$other" --users "$dir/users.toml" \
        --secret-out "$dir/you.totp" >>"$dir/setup.log"
    cat >"$dir/organism.toml" <<EOF
# One organism of the federation demo (deploy/federation-demo.sh).
listen = "127.0.0.1:$port"
data_dir = "data"
users = "users.toml"
identity = "identity.pub"
compile_cache = "$compiled_abs"

[storage]
backend = "memory"

[[agent]]
name = "$agent"
component = "$agents_abs/$component.wasm"
listens = ["$tag"]
description = "The $agent agent of this organism."
EOF
}

fingerprint_a=$(organism "$root/a" "$port_a" echo echo echo calculate)
fingerprint_b=$(organism "$root/b" "$port_b" calc calculator calculate echo)
say "organism A: $fingerprint_a (echo, wss://127.0.0.1:$port_a/)"
say "organism B: $fingerprint_b (calc, wss://127.0.0.1:$port_b/)"

servers=()
stop() {
    local pid
    for pid in "${servers[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${servers[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    [ ${#servers[@]} -eq 0 ] || say "both organisms stopped"
}
trap stop EXIT
trap 'exit 130' INT TERM

"$agentserver" run --config "$root/a/organism.toml" >"$root/a/server.log" 2>&1 &
servers+=($!)
"$agentserver" run --config "$root/b/organism.toml" >"$root/b/server.log" 2>&1 &
servers+=($!)

# wait_for DIR PID PATTERN SECONDS WHAT: until the server's log shows
# PATTERN; fails naming WHAT, with the log's end, if the server stops or
# the time passes.
wait_for() {
    local dir=$1 pid=$2 pattern=$3 seconds=$4 what=$5
    local tries=$((seconds * 4))
    while ! grep -q "$pattern" "$dir/server.log"; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$tries" -le 0 ]; then
            tail -n 20 "$dir/server.log" >&2
            fail "$what (see $dir/server.log)"
        fi
        tries=$((tries - 1))
        sleep 0.25
    done
}

wait_for "$root/a" "${servers[0]}" "^tls certificate sha256 " 60 "organism A did not start"
wait_for "$root/b" "${servers[1]}" "^tls certificate sha256 " 60 "organism B did not start"
tls_a=$(sed -n 's/^tls certificate sha256 //p' "$root/a/server.log")
tls_b=$(sed -n 's/^tls certificate sha256 //p' "$root/b/server.log")

# owner_signs DIR PORT PEER-DIR PEER-PORT PEER-TLS SEND ACCEPT: the owner of
# DIR certifies its node key for audit and federation and links to the
# peer; both commands are signed offline with DIR/identity.key and carried
# over one login (a TOTP code is good for one login per 30-second step).
owner_signs() {
    local dir=$1 port=$2 peer_dir=$3 peer_port=$4 peer_tls=$5 send=$6 accept=$7
    local work=$dir/commands
    mkdir -p "$work"
    "$agentserver" command node-certificate --node-key "$dir/data/node.pub" --days 1 \
        --purpose audit,federation \
        | "$agentserver" sign - --key "$dir/identity.key" --out "$work/node-certificate.xml"
    "$agentserver" command federation-link --peer-key "$peer_dir/identity.pub" \
        --address "wss://127.0.0.1:$peer_port/" --tls-fingerprint "$peer_tls" \
        --send "$send" --accept "$accept" \
        | "$agentserver" sign - --key "$dir/identity.key" --out "$work/federation-link.xml"
    "$agentserver" apply "$work/node-certificate.xml" "$work/federation-link.xml" \
        --url "wss://127.0.0.1:$port/" --user owner --totp-secret-file "$dir/owner.totp" \
        --ca "$dir/data/tls/cert.pem" >"$work/apply.log" 2>&1 \
        || { cat "$work/apply.log" >&2; fail "applying the commands to $dir failed"; }
}

# B's owner links first, so that A's gateway finds B ready when A's owner
# links; B's own gateway reaches A on one of its retries.
owner_signs "$root/b" "$port_b" "$root/a" "$port_a" "$tls_a" echo calculate
say "B's owner certified B's node key and linked B to A (send echo, accept calculate)"
owner_signs "$root/a" "$port_a" "$root/b" "$port_b" "$tls_b" calculate echo
say "A's owner certified A's node key and linked A to B (send calculate, accept echo)"
wait_for "$root/a" "${servers[0]}" "federation link connected" 20 "A's gateway did not reach B"
wait_for "$root/b" "${servers[1]}" "federation link connected" 40 "B's gateway did not reach A"
say "both gateways connected"

# ask DIR PORT MESSAGE EXPECTED-FROM: user `demo` of DIR sends MESSAGE and
# prints the answer, which must come from EXPECTED-FROM.
ask() {
    local dir=$1 port=$2 message=$3 expected=$4
    echo "$message" >"$dir/message.xml"
    local answer
    answer=$("$agentserver" connect "wss://127.0.0.1:$port/" --user demo \
        --totp-secret-file "$dir/demo.totp" --ca "$dir/data/tls/cert.pem" \
        --send "$dir/message.xml" | sed '/^<catalog/,/^<\/catalog>/d')
    echo "$answer" | sed 's/^/    /'
    grep -qF "<from>$expected</from>" <<<"$answer" \
        || fail "the answer did not come from $expected"
}

echo
say "A's user demo sends <calculate>6 * 7</calculate> to A; A's gateway carries it to B:"
ask "$root/a" "$port_a" "<calculate>6 * 7</calculate>" "$fingerprint_b/calc"
echo
say "B's user demo sends <echo>hello from B</echo> to B; B's gateway carries it to A:"
ask "$root/b" "$port_b" "<echo>hello from B</echo>" "$fingerprint_a/echo"
echo

if [ "$once" = 1 ]; then
    say "answers crossed both ways (FEDERATION_DEMO_ONCE=1: stopping)"
    exit 0
fi

cat <<EOF
Serving until Ctrl-C. Log in as \`you\` on either organism:
  console A:  https://127.0.0.1:$port_a/   console B:  https://127.0.0.1:$port_b/   (development certificates)
  code:       $agentserver user code you --users $root/a/users.toml   (or $root/b/users.toml)
  client A:   $agentserver connect wss://127.0.0.1:$port_a/ --user you --totp-secret-file $root/a/you.totp --ca $root/a/data/tls/cert.pem
  client B:   $agentserver connect wss://127.0.0.1:$port_b/ --user you --totp-secret-file $root/b/you.totp --ca $root/b/data/tls/cert.pem
  traffic:    curl -sk https://127.0.0.1:$port_a/metrics | grep federation
  logs:       $root/a/server.log, $root/b/server.log
  unlink:     $agentserver command federation-unlink --peer $fingerprint_b | $agentserver sign - --key $root/a/identity.key \\
                | $agentserver apply - --url wss://127.0.0.1:$port_a/ --user owner --totp-secret-file $root/a/owner.totp --ca $root/a/data/tls/cert.pem
              (a user logs in once per 30-second TOTP step: within 30 s of the demo's own logins, wait and try again)
EOF
wait "${servers[@]}"
