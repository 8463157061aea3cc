"""An asyncio client for AgentServer: log in with TOTP, read the catalog,
ask, stream, continue threads, resume after a dropped connection, stay
within the flood limits, and carry signed privileged commands.

Example::

    async with Client(URL, "svc", totp_secret=SECRET, ca=CA) as c:
        answer = await c.ask("<calculate>2 + 3 * 4</calculate>")
        print(answer.text)  # 14

See ``docs/clients/python.md`` in the AgentServer repository.
"""

import logging as _logging

from .client import Client
from .errors import (
    BAD_MESSAGE_CODES,
    ERROR_CLASSES,
    AccessDenied,
    AgentFailed,
    AgentServerError,
    AskTimeout,
    AuthenticationFailed,
    BadFrame,
    Busy,
    CommandRefused,
    ConnectionLost,
    Flooding,
    FramesDropped,
    Malformed,
    NoListener,
    SessionEnded,
    SessionLost,
    SessionTakenOver,
    ShuttingDown,
    StorageUnavailable,
    ThreadLimit,
    TooManyConnections,
    UnknownThread,
    error_from_frame,
)
from .frames import (
    Answer,
    Capability,
    Catalog,
    Envelope,
    PrivilegedResult,
    element,
    escape,
    escape_attribute,
    parse_catalog,
)
from .limits import TOTP_STEPS, RateLimit, TotpSteps

__version__ = "0.1.0"

# The client logs resumes and fresh logins; the application decides where
# that goes.
_logging.getLogger("agentserver_client").addHandler(_logging.NullHandler())

__all__ = [
    "BAD_MESSAGE_CODES",
    "ERROR_CLASSES",
    "TOTP_STEPS",
    "AccessDenied",
    "AgentFailed",
    "AgentServerError",
    "Answer",
    "AskTimeout",
    "AuthenticationFailed",
    "BadFrame",
    "Busy",
    "Capability",
    "Catalog",
    "Client",
    "CommandRefused",
    "ConnectionLost",
    "Envelope",
    "Flooding",
    "FramesDropped",
    "Malformed",
    "NoListener",
    "PrivilegedResult",
    "RateLimit",
    "SessionEnded",
    "SessionLost",
    "SessionTakenOver",
    "ShuttingDown",
    "StorageUnavailable",
    "ThreadLimit",
    "TooManyConnections",
    "TotpSteps",
    "UnknownThread",
    "element",
    "error_from_frame",
    "escape",
    "escape_attribute",
    "parse_catalog",
]
