"""The exceptions of the client: one class per ``<error code>`` the server
sends, and a few for what happens to the connection itself.

Every exception the client raises on purpose is an :class:`AgentServerError`
and carries ``code``, ``agent`` and ``message``; those that concern a thread
also carry ``thread``, and the refusals of a tag carry ``tag``.

Server codes (the ``code`` attribute of ``<error>``, or ``access-denied``,
which the server sends as an element of its own):

======================= =========================== =====================================================
code                    class                       when
======================= =========================== =====================================================
``access-denied``       :class:`AccessDenied`       the user may not send that root tag
``no-listener``         :class:`NoListener`         no agent listens to that tag
``malformed``           :class:`Malformed`          the frame is not XML that can be repaired
``unknown-thread``      :class:`UnknownThread`      continuing a thread the session does not have
``agent-failed``        :class:`AgentFailed`        an agent's call failed (trap, limit, its own failure)
``busy``                :class:`Busy`               the agent's calls and queue are full
``thread-limit``        :class:`ThreadLimit`        the thread went too deep or carried too many messages
``bad-frame``           :class:`BadFrame`           a binary frame, or one past ``max_message_bytes``
``shutting-down``       :class:`ShuttingDown`       the server is shutting down and takes no new messages
``storage-unavailable`` :class:`StorageUnavailable` the server's storage is failing; nothing was done
``frames-dropped``      :class:`FramesDropped`      frames kept for a resume were dropped (the oldest)
======================= =========================== =====================================================

Client codes (no frame of the server carries them):

======================== ============================ =====================================
code                     class                        when
======================== ============================ =====================================
``authentication-failed`` :class:`AuthenticationFailed` the login was refused
``too-many-connections``  :class:`TooManyConnections`   the user has ``max_connections_per_user`` open
``connection-lost``       :class:`ConnectionLost`       the connection could not be resumed in time
``session-lost``          :class:`SessionLost`          the session is gone (expired or ended): its threads with it
``session-ended``         :class:`SessionEnded`         ``<end-session/>`` (from the client or an agent)
``session-taken-over``    :class:`SessionTakenOver`     another connection resumed this session
``flooding``              :class:`Flooding`             the server closed the connection for flooding
``timeout``               :class:`AskTimeout`           no answer within the time given
``command-refused``       :class:`CommandRefused`       a signed privileged command was refused
======================== ============================ =====================================
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Final


class AgentServerError(Exception):
    """Base class of every error the client raises on purpose.

    Attributes:
        code: the server's ``<error code>`` (or ``access-denied``), or one of
            the client's own codes listed in this module's documentation.
        agent: the agent concerned, when the server names one.
        message: the server's text (or the client's explanation).
        thread: the thread concerned, when there is one.
        tag: the root tag concerned (``access-denied``, ``no-listener``).
        frame: the frame the error came from, as received (empty for the
            client's own errors).
    """

    #: The code this class stands for (subclasses set it).
    default_code: str = "error"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        agent: str | None = None,
        thread: str | None = None,
        tag: str | None = None,
        frame: str = "",
    ) -> None:
        self.code: str = code if code is not None else self.default_code
        self.agent: str | None = agent
        self.message: str = message
        self.thread: str | None = thread
        self.tag: str | None = tag
        self.frame: str = frame
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [self.code]
        if self.agent:
            parts.append(f"agent {self.agent}")
        if self.tag:
            parts.append(f"tag {self.tag}")
        if self.thread:
            parts.append(f"thread {self.thread}")
        text = ", ".join(parts)
        return f"{text}: {self.message}" if self.message else text


class AccessDenied(AgentServerError):
    """The user may not send this root tag (``<access-denied tag="…"/>``).

    The server counts it as a bad message (see :class:`RateLimit`)."""

    default_code = "access-denied"


class NoListener(AgentServerError):
    """No agent listens to this root tag."""

    default_code = "no-listener"


class Malformed(AgentServerError):
    """The frame is not XML that can be repaired, or breaks an XML limit.

    The server counts it as a bad message."""

    default_code = "malformed"


class UnknownThread(AgentServerError):
    """The thread continued is not one of this session's live threads."""

    default_code = "unknown-thread"


class AgentFailed(AgentServerError):
    """An agent's call failed: it trapped, hit a limit, or answered with a
    failure of its own (``malformed: …``, ``refused: …``, ``internal: …``).
    ``agent`` names it."""

    default_code = "agent-failed"


class Busy(AgentServerError):
    """The agent had ``max_concurrent`` calls in flight and a full queue.
    Asking again later may succeed."""

    default_code = "busy"


class ThreadLimit(AgentServerError):
    """The thread went past ``max_hops`` deliveries or
    ``max_thread_messages`` messages, and has ended."""

    default_code = "thread-limit"


class BadFrame(AgentServerError):
    """The frame was binary or larger than ``max_message_bytes``.

    The server counts it as a bad message."""

    default_code = "bad-frame"


class ShuttingDown(AgentServerError):
    """The server is shutting down and takes no new messages."""

    default_code = "shutting-down"


class StorageUnavailable(AgentServerError):
    """The server's storage has been failing for long enough that it takes
    no new messages: nothing was done, and the same message may be sent
    again later."""

    default_code = "storage-unavailable"


class FramesDropped(AgentServerError):
    """Frames kept for this session while its connection was down were
    dropped, the oldest first (past ``max_pending_frames``). ``count`` says
    how many. The client records it (:attr:`Client.frames_dropped`) rather
    than raising it, since it concerns no single message."""

    default_code = "frames-dropped"

    def __init__(
        self,
        message: str = "",
        *,
        count: int = 0,
        code: str | None = None,
        agent: str | None = None,
        thread: str | None = None,
        tag: str | None = None,
        frame: str = "",
    ) -> None:
        self.count: int = count
        super().__init__(
            message or f"{count} frames dropped",
            code=code,
            agent=agent,
            thread=thread,
            tag=tag,
            frame=frame,
        )


class AuthenticationFailed(AgentServerError):
    """The server refused the login (wrong or reused code, unknown user, or
    too many failures). The server never says which."""

    default_code = "authentication-failed"


class TooManyConnections(AgentServerError):
    """The user already has ``max_connections_per_user`` connections."""

    default_code = "too-many-connections"


class ConnectionLost(AgentServerError):
    """The connection is gone and could not be resumed within
    ``resume_timeout``; or the client was closed."""

    default_code = "connection-lost"


class SessionLost(ConnectionLost):
    """The session could not be resumed (it expired or the server forgot
    it): its threads are gone with it. With ``relogin`` the client logs in
    to a new session, and only the calls that were waiting fail."""

    default_code = "session-lost"


class SessionEnded(ConnectionLost):
    """The session ended: ``<end-session/>`` from this client or from an
    agent."""

    default_code = "session-ended"


class SessionTakenOver(ConnectionLost):
    """Another connection resumed this session; this one was closed."""

    default_code = "session-taken-over"


class Flooding(ConnectionLost):
    """The server closed the connection and ended the session for
    flooding: past its message rate, or too many bad messages."""

    default_code = "flooding"


class AskTimeout(AgentServerError, TimeoutError):
    """No answer (or no next frame) within the time given."""

    default_code = "timeout"


class CommandRefused(AgentServerError):
    """A signed privileged command was refused; ``message`` says why and
    ``command_id`` names it (when the server could read it)."""

    default_code = "command-refused"

    def __init__(self, message: str = "", *, command_id: str | None = None, frame: str = "") -> None:
        self.command_id: str | None = command_id
        super().__init__(message, frame=frame)


#: The class of each code the server sends in an error frame.
ERROR_CLASSES: Final[dict[str, type[AgentServerError]]] = {
    cls.default_code: cls
    for cls in (
        AccessDenied,
        NoListener,
        Malformed,
        UnknownThread,
        AgentFailed,
        Busy,
        ThreadLimit,
        BadFrame,
        ShuttingDown,
        StorageUnavailable,
        FramesDropped,
    )
}

#: Codes the server counts as bad messages: more than 20 of them within
#: 10 seconds close the connection for flooding.
BAD_MESSAGE_CODES: Final[frozenset[str]] = frozenset({"access-denied", "malformed", "bad-frame"})


def error_from_frame(frame: str) -> AgentServerError:
    """The exception an ``<error>`` or ``<access-denied>`` frame stands for.

    An unknown code gives a plain :class:`AgentServerError` with that code,
    so a newer server's errors are still typed by their code.

    Raises:
        ValueError: when the frame is not an error frame.
    """
    try:
        element = ET.fromstring(frame)
    except ET.ParseError as error:
        raise ValueError(f"not an error frame: {frame[:80]!r}") from error
    if element.tag == "access-denied":
        code = "access-denied"
    elif element.tag == "error":
        code = element.get("code", "error")
    else:
        raise ValueError(f"not an error frame: {frame[:80]!r}")
    message = "".join(element.itertext())
    agent, thread, tag = element.get("agent"), element.get("thread"), element.get("tag")
    cls = ERROR_CLASSES.get(code, AgentServerError)
    if cls is FramesDropped:
        count_text = element.get("count", "0")
        count = int(count_text) if count_text.isdigit() else 0
        return FramesDropped(message, count=count, agent=agent, thread=thread, tag=tag, frame=frame)
    return cls(message, code=code, agent=agent, thread=thread, tag=tag, frame=frame)
