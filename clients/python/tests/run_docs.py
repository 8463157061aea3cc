"""Runs the Python examples of a documentation page against a real server,
in order, each as written, and fails on the first that fails.

    python3 run_docs.py docs/clients/python.md

The page's first ``python`` block holds the settings (``URL``, ``CA``,
``USER``, ``SECRET``); it runs in a folder laid out as ``make run`` leaves
the repository (``run/data/tls/cert.pem``, ``run/svc.totp``, and the signed
``twin.xml`` of the page's signed-command example). Every later block runs
in a namespace of its own with those four settings pointed at the test
server and at a user of its own (``doc1``, ``doc2``, …: the server accepts
one login per user and TOTP time step), and with ``<ask>`` pointed at the
mock model server (``<ask endpoint='…'>``). The environment is that of
``support.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
from typing import Any

from support import CA, COMMANDS, LLM_ENDPOINT, URL, USERS

SETTINGS = ("URL", "CA", "USER", "SECRET")


def python_blocks(page: str) -> list[tuple[int, str]]:
    """The ``python`` blocks of a Markdown page, with their first line."""
    blocks: list[tuple[int, str]] = []
    current: list[str] | None = None
    start = 0
    for number, line in enumerate(page.splitlines(), 1):
        stripped = line.rstrip()
        if current is None and stripped == "```python":
            current, start = [], number + 1
        elif current is not None and stripped == "```":
            blocks.append((start, "\n".join(current) + "\n"))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def lay_out(folder: str) -> None:
    """The files the examples name, as ``make run`` and the page's ``sh``
    blocks leave them."""
    os.makedirs(os.path.join(folder, "run/data/tls"))
    shutil.copy(CA, os.path.join(folder, "run/data/tls/cert.pem"))
    with open(os.path.join(folder, "run/svc.totp"), "w") as secret:
        secret.write(USERS["svc"] + "\n")
    shutil.copy(os.path.join(COMMANDS, "twin.xml"), os.path.join(folder, "twin.xml"))


def main(page_path: str) -> int:
    if not (URL and CA and COMMANDS and LLM_ENDPOINT and "svc" in USERS):
        print("run_docs.py needs the environment of support.py", file=sys.stderr)
        return 2
    with open(page_path, encoding="utf-8") as page:
        blocks = python_blocks(page.read())
    if len(blocks) < 8:
        print(f"{page_path}: only {len(blocks)} python blocks", file=sys.stderr)
        return 1
    spare = sorted(name for name in USERS if name.startswith("doc"))
    if len(spare) < len(blocks) - 1:
        print(f"{len(blocks) - 1} examples need as many doc users, got {spare}", file=sys.stderr)
        return 2
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        lay_out(folder)
        os.chdir(folder)
        try:
            (first_line, settings), *examples = blocks
            settled: dict[str, Any] = {}
            exec(compile(settings, f"{page_path}:{first_line}", "exec"), settled)
            missing = [name for name in SETTINGS if name not in settled]
            if missing:
                print(f"{page_path}:{first_line}: the settings block does not set {missing}", file=sys.stderr)
                return 1
            print(f"{page_path}:{first_line}: settings ... ok", file=sys.stderr)
            for (line, source), user in zip(examples, spare):
                namespace: dict[str, Any] = {
                    "__name__": "__main__",
                    "URL": URL,
                    "CA": CA,
                    "USER": user,
                    "SECRET": USERS[user],
                }
                source = source.replace("<ask>", f"<ask endpoint='{LLM_ENDPOINT}'>")
                try:
                    exec(compile(source, f"{page_path}:{line}", "exec"), namespace)
                except BaseException:
                    traceback.print_exc()
                    print(f"{page_path}:{line}: example ... FAIL", file=sys.stderr)
                    return 1
                print(f"{page_path}:{line}: example as {user} ... ok", file=sys.stderr)
        finally:
            os.chdir(home)
    print(f"\nRan {len(blocks)} examples\n\nOK", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
