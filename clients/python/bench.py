"""Asks per second through the client library, next to a raw `websockets`
loop doing the same asks, in the same run, against the same server.

    cargo build --release -p agentserver && make agents
    python3 clients/python/bench.py --server target/release/agentserver

It starts the server (``agentserver run``: the ``echo`` agent with room for
64 calls at once, flood limits raised as for ``agentserver bench``, one user
per connection), logs every connection in over TLS with TOTP, warms both
sides up, then alternates runs — library, raw, library, raw… ``--rounds``
times — of two loads, each connection asking closed-loop (the next ask
once the answer is in):

- one connection, ``--asks`` asks;
- ``--connections`` connections at once, ``--asks-per-connection`` each.

The raw loop sends ``<echo>hello, agent</echo>`` and reads one frame; the
library does ``await client.ask(…)`` with its rate limiter on (set to the
raised limits) and checks the answer's payload. Both run in this process,
one after the other, and share the machine with the server. It prints a
Markdown table of every run — asks per second, and this process's CPU time
per ask — and the medians, and what the library costs over raw frames.
Everything stops by itself.

``--only lib`` or ``--only raw`` runs one side alone, to count its
instructions (``valgrind --tool=callgrind python3 bench.py --only lib
--rounds 1 --asks N``, for two values of N; the server, a child process, is
not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import pyotp
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agentserver_client import Client, RateLimit  # noqa: E402

QUESTION = "<echo>hello, agent</echo>"
ANSWER_END = "<echoed>hello, agent</echoed></message>"
#: The flood limits the server runs with here (as `agentserver bench`).
LIMIT = 1_000_000


@dataclass
class Server:
    """The server under test, as a child process."""

    process: subprocess.Popen[str]
    url: str
    ca: str
    secrets: list[str]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(binary: str, agents: str, users: int, folder: Path) -> Server:
    """Writes the configuration and the users, and starts ``run``."""
    echo = Path(agents, "echo.wasm").resolve()
    if not echo.is_file():
        raise SystemExit(f"{echo} is missing: build the example agents with `make agents`")
    secrets = []
    for n in range(users):
        secret_file = folder / f"u{n}.totp"
        subprocess.run(
            [binary, "user", "add", f"u{n}", "--allow", "echo", "--users", str(folder / "users.toml")]
            + ["--secret-out", str(secret_file)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        secrets.append(secret_file.read_text().strip())
    (folder / "organism.toml").write_text(
        'listen = "127.0.0.1:0"\n'
        f"messages_per_second = {LIMIT}\nmessage_burst = {LIMIT}\n"
        f'[[agent]]\nname = "echo"\ncomponent = "{echo}"\nlistens = ["echo"]\n'
        "max_concurrent = 64\nmax_queued = 4096\n"
    )
    process = subprocess.Popen(
        [binary, "run", "--config", str(folder / "organism.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip().replace("listening on ", "")
    process.stdout.readline()  # the certificate's fingerprint
    if not url.startswith("wss://"):
        process.kill()
        raise SystemExit(f"the server did not start: {url!r}")
    return Server(process, url, str(folder / "data/tls/cert.pem"), secrets)


class Raw:
    """One connection driven with bare frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def login(cls, server: Server, user: int, context: ssl.SSLContext) -> Raw:
        ws = await connect(server.url, ssl=context, compression=None, max_size=16 << 20)
        code = pyotp.TOTP(server.secrets[user]).now()
        await ws.send(f'<authenticate user="u{user}" totp="{code}"/>')
        catalog = await ws.recv()
        assert isinstance(catalog, str) and catalog.startswith("<catalog"), catalog
        return cls(ws)

    async def asks(self, count: int) -> None:
        ws = self.ws
        for _ in range(count):
            await ws.send(QUESTION)
            answer = await ws.recv()
            assert isinstance(answer, str) and answer.endswith(ANSWER_END), answer

    async def close(self) -> None:
        await self.ws.close()


class Library:
    """One connection driven through the client library."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    async def login(cls, server: Server, user: int, context: ssl.SSLContext) -> Library:
        client = Client(
            server.url,
            f"u{user}",
            totp_secret=server.secrets[user],
            ssl_context=context,
            rate_limit=RateLimit.for_server(LIMIT, LIMIT),
        )
        await client.connect()
        return cls(client)

    async def asks(self, count: int) -> None:
        ask = self.client.ask
        for _ in range(count):
            answer = await ask(QUESTION)
            assert answer.payload == "<echoed>hello, agent</echoed>", answer

    async def close(self) -> None:
        await self.client.close()


@dataclass
class Run:
    """One run of one side: asks per second, and this process's CPU time
    per ask (microseconds)."""

    rate: float
    cpu_us: float


async def timed(drivers: list[Raw] | list[Library], asks: int) -> Run:
    """Every driver asking ``asks`` times at once."""
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(driver.asks(asks) for driver in drivers))
    count = len(drivers) * asks
    return Run(count / (time.perf_counter() - started), (time.process_time() - cpu) / count * 1e6)


Result = tuple[str, Run | None, Run | None]


async def bench(args: argparse.Namespace, server: Server) -> list[Result]:
    context = ssl.create_default_context(cafile=server.ca)
    n = args.connections
    lib_side, raw_side = args.only in (None, "lib"), args.only in (None, "raw")
    # Users 0 and 1..n for the library, n+1 and n+2..2n+1 for the raw loop.
    lib_one = [await Library.login(server, 0, context)] if lib_side else []
    lib_many = [await Library.login(server, 1 + i, context) for i in range(n)] if lib_side else []
    raw_one = [await Raw.login(server, n + 1, context)] if raw_side else []
    raw_many = [await Raw.login(server, n + 2 + i, context) for i in range(n)] if raw_side else []
    loads: list[tuple[str, list[Library], list[Raw], int]] = [
        ("1 connection", lib_one, raw_one, args.asks),
        (f"{n} connections", lib_many, raw_many, args.asks_per_connection),
    ]
    results: list[Result] = []
    for name, lib, raw, asks in loads:
        if lib:
            await timed(lib, max(10, asks // 5))
        if raw:
            await timed(raw, max(10, asks // 5))
        for _ in range(args.rounds):
            lib_run = await timed(lib, asks) if lib else None
            raw_run = await timed(raw, asks) if raw else None
            results.append((name, lib_run, raw_run))
            print(f"{name}: library {lib_run}, raw {raw_run}", file=sys.stderr)
    closing: list[Callable[[], Awaitable[None]]] = [d.close for d in lib_one + lib_many]
    closing += [d.close for d in raw_one + raw_many]
    await asyncio.gather(*(close() for close in closing))
    return results


def report(args: argparse.Namespace, results: list[Result]) -> str:
    lines = [
        "| load | run | library asks/s | raw asks/s | library cost (throughput) "
        "| library CPU µs/ask | raw CPU µs/ask | library cost (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for load in dict.fromkeys(name for name, _, _ in results):
        runs = [(lib, raw) for name, lib, raw in results if name == load and lib and raw]
        for i, (lib, raw) in enumerate(runs, 1):
            lines.append(
                f"| {load} | {i} | {lib.rate:,.0f} | {raw.rate:,.0f} | {raw.rate / lib.rate - 1:+.1%} "
                f"| {lib.cpu_us:.0f} | {raw.cpu_us:.0f} | {lib.cpu_us / raw.cpu_us - 1:+.1%} |"
            )
        if not runs:
            continue
        median = statistics.median
        lines.append(
            f"| {load} | **median** | {median(l.rate for l, _ in runs):,.0f} "
            f"| {median(r.rate for _, r in runs):,.0f} "
            f"| **{median(r.rate / l.rate - 1 for l, r in runs):+.1%}** "
            f"| {median(l.cpu_us for l, _ in runs):.0f} | {median(r.cpu_us for _, r in runs):.0f} "
            f"| **{median(l.cpu_us / r.cpu_us - 1 for l, r in runs):+.1%}** |"
        )
    header = (
        f"python {platform.python_version()}, {os.cpu_count()} cores; "
        f"{args.asks} asks on one connection, {args.connections} × {args.asks_per_connection}; "
        f"{args.rounds} rounds\n\n"
    )
    return header + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="target/release/agentserver", help="the agentserver binary")
    parser.add_argument("--agents", default="target/agents", help="the built example agents")
    parser.add_argument("--asks", type=int, default=3000, help="asks on the one connection, per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--asks-per-connection", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=["lib", "raw"], help="run one side only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(args.server, args.agents, 2 * args.connections + 2, Path(folder))
        try:
            results = asyncio.run(bench(args, server))
        finally:
            server.stop()
    print(report(args, results))


if __name__ == "__main__":
    main()
