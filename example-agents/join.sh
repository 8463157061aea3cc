#!/usr/bin/env bash
# Certifies the server's node key, then brings the Python, JavaScript, C and
# Go example agents into the organism that `make run` is serving, while it
# serves: for each language, installs its
# toolchain when missing (saying what, why and about how long), builds its
# agents, and registers them with the running server by signed command —
# signed here with run/identity.key and carried by the user `owner` — so
# they appear in every console's catalog as they arrive.
#
#   example-agents/join.sh URL RUN_DIR
#
# URL is the server (wss://127.0.0.1:8765/), RUN_DIR the folder `make run`
# keeps the identity, users and TLS certificate in. With AGENT_TOOLS=no it
# installs nothing: a language whose toolchain is missing is named, with
# the command that installs it, and skipped. A failure in one language never
# stops the others, nor the server. Everything the tools print goes to
# RUN_DIR/agents.log; the terminal gets one line per step.
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 URL RUN_DIR" >&2
    exit 2
fi
url=$1
run_dir=$2
cd "$(dirname "${BASH_SOURCE[0]}")/.."
agents_dir=target/agents
log=$run_dir/agents.log
agentserver=${AGENTSERVER:-target/debug/agentserver}
install=${AGENT_TOOLS:-yes}
: >"$log"

say() { echo "agents: $*"; }

# step WHAT COMMAND...: runs COMMAND with its output in the log; says how long
# it took, or that it failed and where to look.
step() {
    local what=$1 start=$SECONDS
    shift
    echo "== $what" >>"$log"
    if "$@" >>"$log" 2>&1; then
        say "$what: done in $((SECONDS - start)) s"
    else
        say "$what: failed after $((SECONDS - start)) s (see $log)"
        return 1
    fi
}

# The server answers once its port accepts connections and its certificate
# is written (on first start it makes both).
wait_for_server() {
    local hostport=${url#wss://}
    hostport=${hostport%%/*}
    local host=${hostport%:*} port=${hostport##*:}
    for _ in $(seq 1 600); do
        if [ -f "$run_dir/data/tls/cert.pem" ] && (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    say "the server at $url did not start listening; not registering"
    return 1
}

# A TOTP code is good for one login per 30-second step, so a second
# registration in the same step waits for the next one.
last_step=-1
wait_for_fresh_step() {
    local now
    now=$(date +%s)
    if [ $((now / 30)) -le "$last_step" ]; then
        sleep $((30 - now % 30 + 1))
        now=$(date +%s)
    fi
    last_step=$((now / 30))
}

# register LANGUAGE "NAME TAGS DESCRIPTION [FLAGS...]"...: one signed
# `agent-registration` per agent (the component goes in the server's
# components directory and the command names it), all carried over one login.
register() {
    local language=$1
    shift
    local work=$run_dir/commands
    mkdir -p "$work" "$run_dir/data/components"
    local signed=() names=()
    local name
    for spec in "$@"; do
        eval "set -- $spec"
        name=$1
        local tags=$2 description=$3
        shift 3
        cp "$agents_dir/$name.wasm" "$run_dir/data/components/$name.wasm" || return 1
        "$agentserver" command register --name "$name" --wasm "$agents_dir/$name.wasm" --src \
            --listens "$tags" --description "$description" "$@" >"$work/$name.xml" 2>>"$log" \
            && "$agentserver" sign --key "$run_dir/identity.key" --out "$work/$name.signed.xml" \
                "$work/$name.xml" >>"$log" 2>&1 \
            || { say "cannot write the command registering $name (see $log)"; return 1; }
        signed+=("$work/$name.signed.xml")
        names+=("$name")
    done
    wait_for_server || return 1
    wait_for_fresh_step
    if "$agentserver" apply "${signed[@]}" --url "$url" --user owner \
        --totp-secret-file "$run_dir/owner.totp" --ca "$run_dir/data/tls/cert.pem" >>"$log" 2>&1; then
        say "$language agents serving: ${names[*]}"
    else
        say "registering the $language agents (${names[*]}) failed (see $log)"
        return 1
    fi
}

# The server signs audit checkpoints with its node key (made at its first
# start in run/data); certify that key with the development identity, as an
# owner would (docs/operations.md, "Proving what the organism carried").
certify_node() {
    local work=$run_dir/commands
    mkdir -p "$work"
    wait_for_server || return 1
    "$agentserver" command node-certificate --node-key "$run_dir/data/node.pub" --days 30 \
        >"$work/node-certificate.xml" 2>>"$log" \
        && "$agentserver" sign --key "$run_dir/identity.key" --out "$work/node-certificate.signed.xml" \
            "$work/node-certificate.xml" >>"$log" 2>&1 \
        || { say "cannot write the node certificate (see $log)"; return 1; }
    wait_for_fresh_step
    if "$agentserver" apply "$work/node-certificate.signed.xml" --url "$url" --user owner \
        --totp-secret-file "$run_dir/owner.totp" --ca "$run_dir/data/tls/cert.pem" >>"$log" 2>&1; then
        say "node key certified for 30 days: it signs the audit checkpoints"
    else
        say "certifying the node key failed (see $log)"
        return 1
    fi
}

# tools LANGUAGE AGENTS CHECK INSTALL-SCRIPT WHAT: CHECK succeeds when the
# toolchain is there; otherwise INSTALL-SCRIPT installs it, or with
# AGENT_TOOLS=no the language is skipped with the reason.
tools() {
    local language=$1 agents=$2 check=$3 script=$4 what=$5
    if eval "$check" >/dev/null 2>&1; then
        return 0
    fi
    if [ "$install" = no ]; then
        say "not serving $agents: the $language toolchain is missing ($what); \`make agent-tools\` installs it"
        return 1
    fi
    say "installing the $language toolchain to build $agents: $what"
    step "$language toolchain" bash "$script"
}

python_agents() {
    local pinned
    pinned=$(sed -n 's/^componentize-py==\([^[:space:]]*\).*/\1/p' example-agents/python/requirements.txt)
    tools Python "stats, llm" "componentize-py --version | grep -qw '$pinned'" \
        example-agents/python/install-tools.sh \
        "componentize-py $pinned, a PyPI wheel of about 40 MB, under a minute" || return
    step "building the Python agents (CPython in each component, about a minute)" \
        bash example-agents/python/build.sh "$agents_dir" stats llm || return
    register Python \
        "stats 'stats,stats-total' 'Count, mean, median and stdev of numbers, per call and per session (Python).'" \
        "llm ask 'Asks a language model (streams <partial> frames, then the <answer>) and remembers your conversation (Python).' \
            --timeout-ms 60000 --memory-bytes 67108864 --fuel 5000000000 \
            --allow-host http://127.0.0.1:18080 --http-max-requests 4 --http-timeout-ms 30000 \
            --session-bucket 8:262144"
}

javascript_agents() {
    local pinned
    pinned=$(node -p "require('./example-agents/javascript/package.json').devDependencies['@bytecodealliance/componentize-js']" 2>/dev/null)
    tools JavaScript sort \
        "node -e \"process.exit(require('./example-agents/javascript/node_modules/@bytecodealliance/componentize-js/package.json').version === '$pinned' ? 0 : 1)\"" \
        example-agents/javascript/install-tools.sh \
        "componentize-js ${pinned:-?} from npm into example-agents/javascript/node_modules, about 60 MB, under a minute" || return
    step "building the JavaScript agents (SpiderMonkey in each component, about a minute)" \
        node example-agents/javascript/build.mjs "$agents_dir" || return
    register JavaScript "sort sort 'Sorts words, order=\"asc\" or \"desc\" (JavaScript).'"
}

c_agents() {
    # shellcheck source=c/tools.env
    source example-agents/c/tools.env
    tools C checksum \
        "command -v $C_AGENT_CLANG && has_wit_bindgen && has_version '$WASM_TOOLS' '$WASM_TOOLS_VERSION'" \
        example-agents/c/install-tools.sh \
        "clang-14 and wasi-libc from Debian (about a minute), wasm-tools $WASM_TOOLS_VERSION from PyPI (seconds), wit-bindgen-cli $WIT_BINDGEN_VERSION compiled by cargo install (about 4 minutes on 2 cores)" || return
    step "building the C agents (seconds)" bash example-agents/c/build.sh "$agents_dir" || return
    register C "checksum checksum 'The CRC-32 of a text (C).'"
}

go_agents() {
    # shellcheck source=go/tools.env
    source example-agents/go/tools.env
    tools Go wordfreq \
        "has_go && has_wit_bindgen && has_version '$WASM_TOOLS' '$WASM_TOOLS_VERSION' && [ -f '$GO_WIT_PKG/go.mod' ]" \
        example-agents/go/install-tools.sh \
        "Go $GO_VERSION from PyPI (about 70 MB, under a minute), wit-bindgen-cli $WIT_BINDGEN_VERSION with its Go generator compiled by cargo install (about 5 minutes on 2 cores)" || return
    step "building the Go agents (about 10 s each)" bash example-agents/go/build.sh "$agents_dir" wordfreq || return
    register Go "wordfreq 'wordfreq,wordfreq-total' 'Counts and ranks the words of a text, per call and per session (Go).'"
}

start=$SECONDS
certify_node
python_agents
javascript_agents
c_agents
go_agents
say "done in $((SECONDS - start)) s; the console's catalog shows every agent that joined"
