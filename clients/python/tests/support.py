"""What the tests against a real server share: where the server is and
who may log in, from the environment the harness sets
(``tests/python_client.rs`` in the repository):

- ``AGENTSERVER_URL``: ``wss://127.0.0.1:PORT/``;
- ``AGENTSERVER_CA``: the server's development certificate (PEM);
- ``AGENTSERVER_USERS``: JSON, ``{"user": "BASE32 TOTP SECRET", …}``;
- ``AGENTSERVER_COMMANDS``: a folder of signed commands (optional);
- ``AGENTSERVER_LLM_ENDPOINT``: the mock model server (optional).

Each test logs in as users of its own: the server accepts one login per
user and TOTP time step.
"""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from agentserver_client import Client

URL = os.environ.get("AGENTSERVER_URL", "")
CA = os.environ.get("AGENTSERVER_CA", "")
USERS: dict[str, str] = json.loads(os.environ.get("AGENTSERVER_USERS", "{}"))
COMMANDS = os.environ.get("AGENTSERVER_COMMANDS", "")
LLM_ENDPOINT = os.environ.get("AGENTSERVER_LLM_ENDPOINT", "")

_taken: set[str] = set()


def user(name: str) -> str:
    """Claims user ``name`` for one test (each user logs in once)."""
    if name not in USERS:
        raise unittest.SkipTest(f"no user {name!r} on this server (AGENTSERVER_USERS)")
    if name in _taken:
        raise AssertionError(f"user {name!r} is used by two tests")
    _taken.add(name)
    return name


def client(name: str, **options: Any) -> Client:
    """A client of the test server logged in as ``name`` (once entered)."""
    if not URL:
        raise unittest.SkipTest("AGENTSERVER_URL is not set: run through `cargo test --test python_client`")
    return Client(URL, user(name), totp_secret=USERS[name], ca=CA, **options)
