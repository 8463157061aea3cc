#!/usr/bin/env bash
# Three nodes of one organism on loopback, over NATS and Redis (docs/cluster.md).
#
#   deploy/cluster.sh        (or `make cluster`)
#
# Starts a `nats-server` (port 4333) and a `redis-server` (port 6433) of its
# own, then three nodes of one organism, each with `agentserver run`:
#   a (wss://127.0.0.1:8781/) runs `echo`,
#   b (wss://127.0.0.1:8782/) runs `delegator` (`square-sum`),
#   c (wss://127.0.0.1:8783/) runs `calculator` (`calculate`).
# One owner identity, one user directory (shared through Redis) and data in
# run/cluster (made afresh each time). Once the nodes see each other, user
# `demo` sends <square-sum> to node a: a hands it to b, whose delegator asks
# c's calculator, and the answer comes back to a. Serves until Ctrl-C, then
# stops everything it started.
#
# Environment: CLUSTER_ONCE=1 stops everything and exits once the answer
# is printed; CLUSTER_PORT (8781: the nodes take it and the next two),
# CLUSTER_NATS_PORT, CLUSTER_REDIS_PORT; AGENTSERVER the binary
# (target/debug/agentserver); AGENTS_DIR where the components are
# (target/agents, `make rust-agents`); CLUSTER_ROOT where the organism's
# files go (run/cluster).
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "${BASH_SOURCE[0]}")/.."
agentserver=${AGENTSERVER:-target/debug/agentserver}
agents_dir=${AGENTS_DIR:-target/agents}
port=${CLUSTER_PORT:-8781}
nats_port=${CLUSTER_NATS_PORT:-4333}
redis_port=${CLUSTER_REDIS_PORT:-6433}
once=${CLUSTER_ONCE:-0}
root=${CLUSTER_ROOT:-run/cluster}

say() { echo "cluster: $*"; }
fail() {
    echo "cluster: $*" >&2
    exit 1
}

[ -x "$agentserver" ] || fail "no $agentserver: run \`make build\` first"
for wasm in echo delegator calculator; do
    [ -f "$agents_dir/$wasm.wasm" ] || fail "no $agents_dir/$wasm.wasm: run \`make rust-agents\` first"
done
command -v nats-server >/dev/null || fail "no nats-server: \`make sysdeps\` installs it (Debian's nats-server)"
command -v redis-server >/dev/null || fail "no redis-server: \`make sysdeps\` installs it (Debian's redis-server)"
for p in "$nats_port" "$redis_port" "$port" $((port + 1)) $((port + 2)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        fail "port $p is in use (another cluster still running?); see CLUSTER_PORT, CLUSTER_NATS_PORT, CLUSTER_REDIS_PORT"
    fi
done

rm -rf "$root/a" "$root/b" "$root/c" "$root/organism" "$root/redis"
mkdir -p "$root/organism" "$root/redis" "$root/compiled"
agents_abs=$(cd "$agents_dir" && pwd)
compiled_abs=$(cd "$root/compiled" && pwd)

# The organism: one owner key pair and one user directory for every node.
fingerprint=$("$agentserver" identity generate --out "$root/organism" 2>/dev/null \
    | sed -n 's/^public key sha256 //p')
for user in demo you; do
    "$agentserver" user add "$user" --allow echo,calculate,square-sum \
        --users "$root/organism/users.toml" --secret-out "$root/organism/$user.totp" >/dev/null
done

pids=()
stop() {
    local i pid
    # The nodes first (they tell the others they leave), then NATS and Redis.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [ ${#pids[@]} -eq 0 ] || say "nodes, nats-server and redis-server stopped"
}
trap stop EXIT
trap 'exit 130' INT TERM

nats-server -a 127.0.0.1 -p "$nats_port" >"$root/nats.log" 2>&1 &
pids+=($!)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$root/redis" >"$root/redis.log" 2>&1 &
pids+=($!)

# wait_port PORT WHAT: until something accepts connections on PORT.
wait_port() {
    local p=$1 what=$2 tries=80
    until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
        [ "$tries" -gt 0 ] || fail "$what did not start (see $root/*.log)"
        tries=$((tries - 1))
        sleep 0.25
    done
}
wait_port "$nats_port" nats-server
wait_port "$redis_port" redis-server

# node NAME PORT AGENT COMPONENT TAG DESCRIPTION
node() {
    local name=$1 node_port=$2 agent=$3 component=$4 tag=$5 description=$6
    local dir=$root/$name
    mkdir -p "$dir"
    cp "$root/organism/identity.pub" "$root/organism/users.toml" "$dir/"
    chmod 600 "$dir/users.toml"
    cat >"$dir/organism.toml" <<EOF
# Node $name of the cluster demo (deploy/cluster.sh).
listen = "127.0.0.1:$node_port"
data_dir = "data"
users = "users.toml"
identity = "identity.pub"
compile_cache = "$compiled_abs"

[storage]
backend = "redis"
url = "redis://127.0.0.1:$redis_port"
prefix = "cluster-demo"

[cluster]
nats_url = "nats://127.0.0.1:$nats_port"
node = "$name"

[[agent]]
name = "$agent"
component = "$agents_abs/$component.wasm"
listens = ["$tag"]
description = "$description"
EOF
    "$agentserver" run --config "$dir/organism.toml" >"$dir/server.log" 2>&1 &
    pids+=($!)
    node_pids[$name]=$!
}
declare -A node_pids

# wait_for NAME PATTERN SECONDS WHAT: until node NAME's log shows PATTERN;
# fails naming WHAT, with the log's end, if the node stops or time passes.
wait_for() {
    local log=$root/$1/server.log pid=${node_pids[$1]} pattern=$2 seconds=$3 what=$4
    local tries=$((seconds * 4))
    while ! grep -q "$pattern" "$log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$tries" -le 0 ]; then
            tail -n 20 "$log" >&2 || true
            fail "$what (see $log)"
        fi
        tries=$((tries - 1))
        sleep 0.25
    done
}

node a "$port" echo echo echo "Echoes, on node a."
wait_for a "joined the cluster" 60 "node a did not join"
node b $((port + 1)) delegator delegator square-sum "Sums squares by asking the calculator, on node b."
node c $((port + 2)) calc calculator calculate "Calculates, on node c."
wait_for b "joined the cluster" 60 "node b did not join"
wait_for c "joined the cluster" 60 "node c did not join"
# Two heartbeats: every node has heard the others.
sleep 2
say "organism $fingerprint: nodes a, b, c joined (nats 127.0.0.1:$nats_port, redis 127.0.0.1:$redis_port)"

echo "<square-sum><n>3</n><n>4</n></square-sum>" >"$root/message.xml"
say "user demo sends <square-sum><n>3</n><n>4</n></square-sum> to node a (delegator on b, calculator on c):"
answer=$("$agentserver" connect "wss://127.0.0.1:$port/" --user demo \
    --totp-secret-file "$root/organism/demo.totp" --ca "$root/a/data/tls/cert.pem" \
    --send "$root/message.xml" | sed '/^<catalog/,/^<\/catalog>/d')
echo "$answer" | sed 's/^/    /'
grep -q "<result>25</result>" <<<"$answer" || fail "no <result>25</result> came back through b and c"

if [ "$once" = 1 ]; then
    say "the answer crossed three nodes (CLUSTER_ONCE=1: stopping)"
    exit 0
fi

cat <<EOF
Serving until Ctrl-C. Log in as \`you\` on any node:
  consoles:  https://127.0.0.1:$port/  https://127.0.0.1:$((port + 1))/  https://127.0.0.1:$((port + 2))/  (development certificates)
  code:      $agentserver user code you --users $root/organism/users.toml
  client:    $agentserver connect wss://127.0.0.1:$((port + 1))/ --user you --totp-secret-file $root/organism/you.totp --ca $root/b/data/tls/cert.pem
  logs:      $root/a/server.log, $root/b/server.log, $root/c/server.log
  try:       stop node c (kill the process on port $((port + 2))): within 3 s the others drop it,
             and <calculate> gets no-listener until it is back.
EOF
wait "${pids[@]}"
