"""The stats agent: summary statistics of the numbers it is sent, per call
and per session. Listens to ``stats`` and ``stats-total``; the protocol and
number formatting are documented in ``stats_core``.

Built into a component by ``example-agents/python/build.sh`` (componentize-py
generates the ``wit_world`` bindings from ``wit/agent.wit``). The host keeps
one instance per session, so the module-level ``_STATE`` is the session's.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import (
    Envelope,
    Failure_Internal,
    Failure_Malformed,
    Failure_Refused,
)

from stats_core import Stats, StatsError

_STATE = Stats()

_FAILURES = {
    "malformed": Failure_Malformed,
    "refused": Failure_Refused,
    "internal": Failure_Internal,
}


class WitWorld(wit_world.WitWorld):
    def handle(self, msg: Envelope) -> list[str]:
        host.log(
            host.Level.DEBUG,
            f"stats: <{msg.tag}> from {msg.sender}, {len(_STATE.accepted)} numbers so far",
        )
        try:
            return _STATE.handle(msg.tag, msg.payload)
        except StatsError as error:
            raise Err(_FAILURES[error.kind](error.message))
        except Exception as error:  # a bug here must not trap the instance
            raise Err(Failure_Internal(f"{type(error).__name__}: {error}"))
