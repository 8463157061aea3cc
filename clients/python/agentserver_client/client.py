"""The asyncio client: one WSS connection, one session.

How the client matches answers to questions
-------------------------------------------
A message that is not a ``<message>`` envelope starts a thread, and the
server does not say which: the thread's id first appears on the first frame
the thread sends back (an answer envelope, or an error naming the thread).
So the client starts **one thread at a time** per connection: a question
that starts a thread holds the connection's *start slot* from the moment it
is sent until a frame arrives naming a thread the client has not seen (that
is its thread), or a refusal that names no thread (``malformed``,
``access-denied``, ``no-listener``, ``bad-frame``, ``shutting-down``: that is
its verdict). Other questions wait for the slot; everything else — reading
answers, continuing threads that have an id, streams — runs side by side.
Questions that must overlap inside slow agents go over several clients.

A question whose first frame did not arrive within its timeout keeps the
slot for ``late_grace`` seconds more, so that a late first frame is not
taken for the next question's; its frames are then kept under its thread id
but nobody reads them.

When a thread is answered
-------------------------
The server never says that a thread is finished: an agent may answer with
several payloads, stream ``<partial>`` frames before its answer, or delegate
to another agent which answers in its place. :meth:`Client.ask` returns when
the thread has delivered its first *final* frame — an envelope whose payload
tag is not one of ``stream_tags`` (default ``{"partial"}``) — with every
stream frame before it; an error frame on the thread raises instead. With
``settle=S`` it also takes the frames that follow within ``S`` seconds of
each other. Frames the thread sends afterwards wait, in order, for the next
read of that thread (:meth:`Client.thread`, or :meth:`Client.ask` with
``thread=``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import ssl
from collections import deque
from typing import AsyncIterator, Callable, Final

import pyotp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from .errors import (
    BAD_MESSAGE_CODES,
    AgentServerError,
    AskTimeout,
    AuthenticationFailed,
    CommandRefused,
    ConnectionLost,
    Flooding,
    FramesDropped,
    SessionEnded,
    SessionLost,
    SessionTakenOver,
    TooManyConnections,
    error_from_frame,
)
from .frames import (
    Answer,
    Catalog,
    Envelope,
    PrivilegedResult,
    command_id,
    escape_attribute,
    parse_catalog,
)
from .limits import TOTP_STEP_SECONDS, TOTP_STEPS, RateLimit, TotpSteps, _Limiter

logger: Final = logging.getLogger("agentserver_client")

#: Frames kept per thread until read (the oldest are dropped past it).
MAX_FRAMES_PER_THREAD: Final = 1000
#: Threads the client keeps frames for (the oldest unread are forgotten).
MAX_THREADS: Final = 1024
#: Thread ids the client remembers having seen, so that a late frame of a
#: forgotten thread is not taken for a new thread's (the server keeps 1,024
#: threads per session).
MAX_SEEN_THREADS: Final = 4 * MAX_THREADS
#: The largest frame accepted from the server.
MAX_FRAME_BYTES: Final = 16 << 20

#: The root tag of a message as written (after leading white space).
_ROOT_TAG: Final = re.compile(r"\s*<([^\s/>!?]+)")


class _Connection(ClientConnection):
    """A WebSocket connection that hands each text frame to ``on_text`` as
    soon as it is read, and calls ``on_close`` when the connection is gone.

    Frames go to the client from the connection's own read callback, with
    no reader task in between: an answer wakes the call waiting for it
    directly."""

    on_text: Callable[[str], None] | None = None
    on_close: Callable[[], None] | None = None
    _fragments: list[bytes] | None = None

    def process_event(self, event: Event) -> None:
        on_text = self.on_text
        if on_text is not None and isinstance(event, Frame):
            opcode = event.opcode
            if opcode is Opcode.TEXT and event.fin:
                self._text(on_text, event.data)
                return
            if opcode is Opcode.TEXT:
                self._fragments = [bytes(event.data)]
                return
            if opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(bytes(event.data))
                if event.fin:
                    data, self._fragments = b"".join(self._fragments), None
                    self._text(on_text, data)
                return
            if opcode is Opcode.BINARY or opcode is Opcode.CONT:
                return
        super().process_event(event)

    @staticmethod
    def _text(on_text: Callable[[str], None], data: bytes | bytearray | memoryview) -> None:
        try:
            on_text(str(data, "utf-8", "replace"))
        except Exception:
            logger.exception("a frame could not be handled")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            try:
                on_close()
            except Exception:
                logger.exception("the end of a connection could not be handled")

    def close_frame(self) -> tuple[int, str]:
        """The close code and reason the server sent (1006 and no reason
        when it sent none)."""
        close = getattr(self.protocol, "close_rcvd", None)
        return (close.code, close.reason) if close is not None else (1006, "")


class _Thread:
    """The frames of one thread that nobody has read yet."""

    __slots__ = ("id", "items", "waiter", "failure")

    def __init__(self, thread_id: str) -> None:
        self.id = thread_id
        self.items: deque[Envelope | AgentServerError] = deque(maxlen=MAX_FRAMES_PER_THREAD)
        self.waiter: asyncio.Future[None] | None = None
        self.failure: AgentServerError | None = None

    def push(self, item: Envelope | AgentServerError) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


#: What a start's future gets: its thread id and first frame, or the error
#: that refused the message.
_StartResult = tuple[str, Envelope | AgentServerError] | AgentServerError


class _PendingStart:
    """A message that started a thread whose id is not known yet."""

    __slots__ = ("future", "deadline", "sent", "released")

    def __init__(self, future: asyncio.Future[_StartResult], deadline: float | None) -> None:
        self.future = future
        self.deadline = deadline
        self.sent = False
        self.released = False


class _Handshake:
    """Reads a connection's first frames: after a resume, the frames the
    server kept (which wait in ``kept``), then the catalog; frames after the
    catalog wait in ``after``. Both are handed on once the connection is
    installed, so that nobody sees a resumed frame before the client counts
    the resume."""

    def __init__(self, ws: _Connection) -> None:
        self.ws = ws
        self.kept: list[str] = []
        self.catalog: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.after: list[str] = []
        ws.on_text = self.on_text
        ws.on_close = self.on_close

    def on_text(self, frame: str) -> None:
        if self.catalog.done():
            self.after.append(frame)
        elif frame.startswith("<catalog"):
            self.catalog.set_result(frame)
        else:
            self.kept.append(frame)

    def on_close(self) -> None:
        if not self.catalog.done():
            self.catalog.set_exception(_Closed(*self.ws.close_frame()))

    async def wait(self, timeout: float) -> tuple[Catalog, str | None]:
        """The catalog and its resume token.

        Raises:
            _Closed: the server closed the connection first.
            TimeoutError: no catalog in time.
            ValueError: the catalog cannot be read.
        """
        async with asyncio.timeout(timeout):
            frame = await self.catalog
        return parse_catalog(frame)


class _Closed(Exception):
    """The server closed a connection during its handshake."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(AskTimeout("no frame within the time given"))


class Client:
    """A client of one AgentServer session, over one WSS connection.

    Use it as an async context manager::

        async with Client("wss://127.0.0.1:8765/", "svc", totp_secret=SECRET,
                          ca="run/data/tls/cert.pem") as c:
            answer = await c.ask("<calculate>2 + 3 * 4</calculate>")

    Args:
        url: the server, ``wss://host:port/`` (TLS is mandatory).
        user: who to log in as.
        totp_secret: the user's base32 TOTP secret (``agentserver user add
            … --secret-out FILE`` writes it).
        ca: a PEM file of the certificates to trust (a development
            certificate is its own CA); without it, and without
            ``ssl_context``, the system's trusted roots.
        ssl_context: a ready TLS context instead of ``ca``.
        timeout: seconds a call waits by default (each call may say
            otherwise; ``math.inf`` waits for ever).
        rate_limit: how fast to send (:class:`RateLimit`); ``None`` sends
            as fast as asked, and the server may close the connection for
            flooding.
        stream_tags: payload tags that are not a thread's final answer.
        resume: resume the session after a dropped connection.
        resume_timeout: seconds to keep trying to resume.
        reconnect_delay: seconds to wait before the first attempt.
        relogin: when the session cannot be resumed (it expired, or the
            server forgot it), log in to a new one; the calls waiting on
            the old session's threads fail with :class:`SessionLost`.
        login_attempts: logins tried before giving up (each after the next
            TOTP step begins), in case another process used the step.
        late_grace: seconds the start slot stays held for a question that
            timed out before its thread's first frame (see above).
        open_timeout: seconds to connect, log in or resume.
        on_catalog: called with each new catalog (at login, after each
            resume, and when agents or grants change).
        totp_steps: the record of TOTP steps used (shared by every client
            of the process unless given).
    """

    def __init__(
        self,
        url: str,
        user: str,
        *,
        totp_secret: str,
        ca: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        rate_limit: RateLimit | None = RateLimit(),
        stream_tags: frozenset[str] | set[str] | tuple[str, ...] = ("partial",),
        resume: bool = True,
        resume_timeout: float = 60.0,
        reconnect_delay: float = 0.0,
        relogin: bool = True,
        login_attempts: int = 2,
        late_grace: float = 10.0,
        open_timeout: float = 10.0,
        on_catalog: Callable[[Catalog], None] | None = None,
        totp_steps: TotpSteps = TOTP_STEPS,
    ) -> None:
        if not url.startswith("wss://"):
            raise ValueError(f"not a wss:// URL: {url!r} (the server speaks TLS only)")
        if ssl_context is None:
            ssl_context = ssl.create_default_context(cafile=os.fspath(ca) if ca is not None else None)
        self.url: Final = url
        self.user: Final = user
        self.timeout = timeout
        self.stream_tags: frozenset[str] = frozenset(stream_tags)
        self.resume = resume
        self.resume_timeout = resume_timeout
        self.reconnect_delay = reconnect_delay
        self.relogin = relogin
        self.login_attempts = max(1, login_attempts)
        self.late_grace = late_grace
        self.open_timeout = open_timeout
        self.on_catalog = on_catalog
        #: How many times the client logged in (a fresh session each time).
        self.logins: int = 0
        #: How many times it resumed its session after a dropped connection.
        self.resumes: int = 0
        #: Frames the server dropped while the connection was down.
        self.frames_dropped: int = 0
        #: Frames nobody was waiting for and that belong to no thread (the
        #: newest 1,000).
        self.unclaimed: deque[str] = deque(maxlen=1000)
        self._ssl = ssl_context
        self._totp = pyotp.TOTP(totp_secret)
        self._steps = totp_steps
        self._limiter = _Limiter(rate_limit) if rate_limit is not None else None
        self._ws: _Connection | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._failure: AgentServerError | None = None
        self._catalog: Catalog | None = None
        self._tags: frozenset[str] = frozenset()
        self._catalog_waiters: list[asyncio.Future[None]] = []
        self._token: str | None = None
        self._threads: dict[str, _Thread] = {}
        self._seen: dict[str, None] = {}
        self._slot_busy = False
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._pending: _PendingStart | None = None
        self._start_timer: asyncio.TimerHandle | None = None
        self._last_continuation: str | None = None
        self._command_lock = asyncio.Lock()
        self._command: tuple[str | None, asyncio.Future[PrivilegedResult]] | None = None

    # ----------------------------------------------------------------- life

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connects and logs in (waiting for a fresh TOTP step if this
        process already used the current one for this user).

        Raises:
            AuthenticationFailed: the server refused every login attempt.
            TooManyConnections: the user has too many connections open.
            ConnectionLost: the server could not be reached.
        """
        if self._ws is not None:
            raise RuntimeError("already connected")
        ws, handshake, catalog, token = await self._login()
        self._install(ws, handshake, catalog, token)

    async def close(self, *, end_session: bool = True) -> None:
        """Closes the connection; with ``end_session`` (the default) it
        first ends the session (``<end-session/>``), which stops its threads
        and frees its agent instances. Calls still waiting fail with
        :class:`SessionEnded` (or :class:`ConnectionLost`). Closing while
        the client resumes leaves the session to expire on the server."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if ws is not None and self._connected.is_set() and end_session and self._failure is None:
            try:
                await ws.send("<end-session/>")
                async with asyncio.timeout(5.0):
                    await ws.wait_closed()
            except (ConnectionClosed, OSError, TimeoutError):
                pass
        recovery = self._recovery
        while True:
            if self._ws is not None:
                await self._ws.close()
            if recovery is None or recovery.done() or recovery is asyncio.current_task():
                break
            # A resume may be under way: cancel it, and close whatever
            # connection it installs meanwhile.
            recovery.cancel()
            await asyncio.wait({recovery}, timeout=1.0)
        if self._failure is None:
            self._fail(
                SessionEnded("the client ended the session") if end_session else ConnectionLost("the client was closed")
            )

    # ----------------------------------------------------------- properties

    @property
    def catalog(self) -> Catalog:
        """The tags this user may send, as the server's latest catalog
        says."""
        if self._catalog is None:
            raise RuntimeError("not connected: use `async with Client(...)` or `await client.connect()`")
        return self._catalog

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self.catalog.session

    @property
    def connected(self) -> bool:
        """Whether a connection is up now (``False`` while resuming)."""
        return self._connected.is_set() and self._failure is None

    @property
    def websocket(self) -> ClientConnection | None:
        """The current WebSocket connection (it changes at each resume)."""
        return self._ws

    # ------------------------------------------------------------- messages

    async def ask(
        self,
        xml: str,
        *,
        thread: str | None = None,
        timeout: float | None = None,
        settle: float = 0.0,
    ) -> Answer:
        """Sends ``xml`` and returns the answer: the envelopes of its thread
        up to and including the first final one (see the module's
        documentation), plus, with ``settle``, those that follow within
        ``settle`` seconds of each other.

        Args:
            xml: one XML element (the server repairs what it can, and says
                so in the answer's ``huh`` notes).
            thread: continue this thread instead of starting one.
            timeout: seconds for the whole question (default: the client's).
            settle: seconds of quiet that end the answer after its final
                frame (0: the final frame ends it).

        Raises:
            AgentServerError: the subclass for the error the server sent
                (:class:`AccessDenied`, :class:`AgentFailed`, …).
            AskTimeout: no final frame in time.
        """
        deadline = self._deadline(timeout)
        stream_tags = self.stream_tags
        if thread is None:
            thread_id, first = await self._start(xml, deadline)
            if isinstance(first, AgentServerError):
                raise first
            if first.tag not in stream_tags and settle <= 0.0:
                return Answer(thread_id, (first,), stream_tags)
            frames = [first]
            state = self._thread(thread_id)
        else:
            frames = []
            state = await self._continue(xml, thread, deadline)
        items = state.items
        if not frames or frames[-1].tag in stream_tags:
            while True:
                if items:
                    item = items.popleft()
                    if isinstance(item, AgentServerError):
                        raise item
                    frame = item
                else:
                    frame = await self._next(state, deadline)
                frames.append(frame)
                if frame.tag not in stream_tags:
                    break
        if settle > 0.0:
            loop = asyncio.get_running_loop()
            while True:
                quiet = loop.time() + settle
                try:
                    frames.append(await self._next(state, quiet if deadline is None else min(quiet, deadline)))
                except AskTimeout:
                    break
        return Answer(state.id, tuple(frames), stream_tags)

    async def send(self, xml: str, *, thread: str | None = None, timeout: float | None = None) -> str:
        """Sends ``xml`` and returns its thread's id. Without ``thread`` it
        starts a thread, and returns once the thread's first frame has
        arrived (until then the server does not say which thread it is);
        that frame and the rest wait for :meth:`thread`. With ``thread`` it
        continues that thread and returns at once.

        Raises:
            AgentServerError: a refusal of a message that started a thread.
            AskTimeout: no frame of the new thread in time.
        """
        deadline = self._deadline(timeout)
        if thread is not None:
            return (await self._continue(xml, thread, deadline)).id
        thread_id, first = await self._start(xml, deadline)
        # The first frame waits for thread(), before any that came after.
        self._thread(thread_id).items.appendleft(first)
        return thread_id

    async def thread(
        self,
        thread_id: str,
        *,
        timeout: float | None = None,
        until_final: bool = True,
    ) -> AsyncIterator[Envelope]:
        """The envelopes of a thread as they arrive, from the first not yet
        read::

            async for frame in c.thread(thread_id):
                print(frame.text)

        Args:
            thread_id: the thread.
            timeout: seconds to wait for each frame (default: the client's).
            until_final: stop after the first final frame (one whose tag is
                not a stream tag); ``False`` goes on until the caller stops.

        Raises:
            AgentServerError: an error frame on the thread.
            AskTimeout: no frame within ``timeout``.
        """
        state = self._thread(thread_id)
        while True:
            frame = await self._next(state, self._deadline(timeout))
            yield frame
            if until_final and frame.tag not in self.stream_tags:
                return

    async def stream(
        self,
        xml: str,
        *,
        thread: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Envelope]:
        """Sends ``xml`` and yields its thread's envelopes as they arrive,
        stream frames (``<partial>``) first, until the final one::

            async for frame in c.stream("<ask>What is a component?</ask>"):
                print(frame.text, end="")

        ``timeout`` bounds the wait for each frame.
        """
        thread_id = await self.send(xml, thread=thread, timeout=timeout)
        async for frame in self.thread(thread_id, timeout=timeout):
            yield frame

    async def apply(self, document: str, *, timeout: float = 120.0) -> PrivilegedResult:
        """Carries a signed ``<privileged-command>`` (as ``agentserver sign``
        writes it) and returns the server's verdict. One command at a time
        per connection; the signature alone grants authority.

        Raises:
            CommandRefused: the server refused it (``message`` says why).
            AskTimeout: no verdict in time (compiling a large component
                takes a while on a small machine).
        """
        expected = command_id(document)
        deadline = self._deadline(timeout)
        async with self._command_lock:
            future: asyncio.Future[PrivilegedResult] = asyncio.get_running_loop().create_future()
            self._command = (expected, future)
            try:
                await self._send(document.strip(), deadline)
                async with asyncio.timeout_at(deadline):
                    result = await future
            except TimeoutError as error:
                raise AskTimeout(f"no verdict on command {expected} in time") from error
            finally:
                self._command = None
        if not result.applied:
            raise CommandRefused(result.reason, command_id=result.id, frame=result.xml)
        return result

    async def apply_file(self, path: str | os.PathLike[str], *, timeout: float = 120.0) -> PrivilegedResult:
        """:meth:`apply` of the signed command in file ``path``."""
        with open(path, encoding="utf-8") as file:
            document = file.read()
        return await self.apply(document, timeout=timeout)

    async def wait_for_catalog(self, predicate: Callable[[Catalog], bool], *, timeout: float | None = None) -> Catalog:
        """Waits until the catalog satisfies ``predicate`` (for instance
        ``lambda c: "twin" in c`` after registering an agent) and returns it.

        Raises:
            AskTimeout: not in time.
        """
        deadline = self._deadline(timeout)
        loop = asyncio.get_running_loop()
        while not predicate(self.catalog):
            if self._failure is not None:
                raise self._failure
            waiter: asyncio.Future[None] = loop.create_future()
            self._catalog_waiters.append(waiter)
            handle = loop.call_at(deadline, _expire, waiter) if deadline is not None else None
            try:
                await waiter
            finally:
                if handle is not None:
                    handle.cancel()
        return self.catalog

    # -------------------------------------------------------------- sending

    def _deadline(self, timeout: float | None) -> float | None:
        seconds = self.timeout if timeout is None else timeout
        if math.isinf(seconds):
            return None
        return asyncio.get_running_loop().time() + seconds

    def _unresolved(self) -> int:
        """Messages sent that started a thread and have no verdict yet."""
        pending = self._pending
        return 1 if pending is not None and pending.sent else 0

    async def _send(self, text: str, deadline: float | None, *, continuation: bool = False) -> None:
        """Sends one frame within the rate limit, over whichever connection
        is up (waiting for a resume if none is). ``continuation``: a
        continuation that might be refused as a bad message."""
        while True:
            if self._failure is not None:
                raise self._failure
            ws = self._ws
            if ws is None:
                raise RuntimeError("not connected: use `async with Client(...)` or `await client.connect()`")
            if not self._connected.is_set():
                await self._wait_connected(deadline)
                continue
            limiter = self._limiter
            if limiter is not None:
                if limiter.delay(self._unresolved()) > 0.0:
                    if not await limiter.acquire(deadline, self._unresolved):
                        raise AskTimeout("the rate limit would hold the message past its deadline")
                    if ws is not self._ws:
                        continue
                if continuation:
                    limiter.record_continuation()
            try:
                await ws.send(text)
            except ConnectionClosed:
                # Not sent: the next connection takes it.
                if ws is self._ws:
                    self._connected.clear()
                continue
            return

    async def _wait_connected(self, deadline: float | None) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await self._connected.wait()
        except TimeoutError as error:
            raise AskTimeout("the connection was not resumed in time") from error

    async def _continue(self, xml: str, thread: str, deadline: float | None) -> _Thread:
        """Sends a message that continues ``thread``."""
        state = self._thread(thread)
        self._last_continuation = thread
        envelope = f"<message><meta><thread>{escape_attribute(thread)}</thread></meta>{xml}</message>"
        # A tag of the catalog will not be denied; any other might be.
        match = _ROOT_TAG.match(xml)
        risky = match is None or match.group(1) not in self._tags
        await self._send(envelope, deadline, continuation=risky)
        return state

    async def _start(self, xml: str, deadline: float | None) -> tuple[str, Envelope | AgentServerError]:
        """Sends a message that starts a thread, holding the start slot
        until the thread's first frame (or its refusal) arrives; returns the
        thread's id and that frame (which may be an error on the thread).

        Raises:
            AgentServerError: the refusal of the message, or the client's end.
            AskTimeout: no frame of the thread in time.
        """
        if self._slot_busy or self._slot_waiters:
            await self._take_slot(deadline)
        else:
            self._slot_busy = True
        loop = asyncio.get_running_loop()
        pending = _PendingStart(loop.create_future(), deadline)
        self._pending = pending
        try:
            ws = self._ws
            limiter = self._limiter
            if (
                ws is not None
                and self._failure is None
                and self._connected.is_set()
                and (limiter is None or limiter.delay(0) == 0.0)
            ):
                # The usual case: connected, within the rate limit.
                try:
                    await ws.send(xml)
                except ConnectionClosed:
                    if ws is self._ws:
                        self._connected.clear()
                    await self._send(xml, deadline)
            else:
                await self._send(xml, deadline)
        except BaseException:
            self._release(pending)
            raise
        pending.sent = True
        if deadline is not None:
            timer = self._start_timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._start_timer = loop.call_at(deadline, self._check_start)
        try:
            result = await pending.future
        except asyncio.CancelledError:
            self._haunt(pending)
            raise
        if isinstance(result, AgentServerError):
            raise result
        return result

    def _check_start(self) -> None:
        """The start timer: gives up on a start past its deadline, and
        waits for the next one's. One timer serves start after start."""
        self._start_timer = None
        pending = self._pending
        if pending is None or pending.deadline is None or pending.future.done():
            return
        loop = asyncio.get_running_loop()
        if pending.deadline <= loop.time():
            pending.future.set_result(AskTimeout("no frame of the new thread in time"))
            self._haunt(pending)
        else:
            self._start_timer = loop.call_at(pending.deadline, self._check_start)

    def _haunt(self, pending: _PendingStart) -> None:
        """A start whose asker gave up keeps the slot for ``late_grace``."""
        if not pending.released:
            asyncio.get_running_loop().call_later(self.late_grace, self._release, pending)

    def _release(self, pending: _PendingStart) -> None:
        """Frees the start slot held by ``pending`` (once)."""
        if pending.released:
            return
        pending.released = True
        if self._pending is pending:
            self._pending = None
        self._free_slot()

    async def _take_slot(self, deadline: float | None) -> None:
        """Waits for the start slot, first come first served."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._slot_waiters.append(waiter)
        handle = loop.call_at(deadline, _expire, waiter) if deadline is not None else None
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed the slot, but giving up: pass it on.
                self._free_slot()
            else:
                try:
                    self._slot_waiters.remove(waiter)
                except ValueError:
                    pass
            raise
        finally:
            if handle is not None:
                handle.cancel()

    def _free_slot(self) -> None:
        """Hands the start slot to the next waiter, or frees it."""
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._slot_busy = False

    # ------------------------------------------------------------- receiving

    def _remember(self, thread_id: str) -> None:
        """Notes a thread as seen: its frames never start a new one."""
        seen = self._seen
        seen[thread_id] = None
        if len(seen) > MAX_SEEN_THREADS:
            del seen[next(iter(seen))]

    def _thread(self, thread_id: str) -> _Thread:
        """The unread frames of a thread (made when first needed)."""
        state = self._threads.get(thread_id)
        if state is None:
            state = _Thread(thread_id)
            threads = self._threads
            threads[thread_id] = state
            self._remember(thread_id)
            if len(threads) > MAX_THREADS:
                for old_id, old in threads.items():
                    if old.waiter is None and old is not state:
                        del threads[old_id]
                        break
        return state

    async def _next(self, state: _Thread, deadline: float | None) -> Envelope:
        """The next frame of ``state``'s thread; raises its errors."""
        items = state.items
        while not items:
            failure = state.failure or self._failure
            if failure is not None:
                raise failure
            if state.waiter is not None:
                raise RuntimeError(f"thread {state.id} is already being read")
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            state.waiter = waiter
            handle = loop.call_at(deadline, _expire, waiter) if deadline is not None else None
            try:
                await waiter
            finally:
                state.waiter = None
                if handle is not None:
                    handle.cancel()
        item = items.popleft()
        if isinstance(item, AgentServerError):
            raise item
        return item

    def _dispatch(self, frame: str, resumed: bool = False) -> None:
        """Routes one frame from the server. Never raises."""
        try:
            if frame.startswith("<message>"):
                envelope = Envelope.parse(frame, resumed=resumed)
                self._deliver(envelope.thread, envelope)
            elif frame.startswith("<error") or frame.startswith("<access-denied"):
                self._refusal(error_from_frame(frame))
            elif frame.startswith("<catalog"):
                catalog, _ = parse_catalog(frame)
                self._set_catalog(catalog)
            elif frame.startswith("<privileged-result"):
                result = PrivilegedResult.parse(frame)
                command = self._command
                if command is not None and not command[1].done() and result.id in (None, command[0]):
                    command[1].set_result(result)
                else:
                    self.unclaimed.append(frame)
            else:
                self.unclaimed.append(frame)
        except ValueError:
            logger.warning("a frame the client cannot read: %.200s", frame)
            self.unclaimed.append(frame)

    def _deliver(self, thread_id: str, item: Envelope | AgentServerError) -> None:
        state = self._threads.get(thread_id)
        if state is not None:
            state.push(item)
            return
        pending = self._pending
        if pending is not None and thread_id not in self._seen:
            # The first frame of a thread not seen before: the thread of
            # the message holding the start slot, and its first frame.
            self._remember(thread_id)
            if not pending.future.done():
                pending.future.set_result((thread_id, item))
                self._release(pending)
                return
            # Its asker gave up: the frame waits with its thread.
            self._release(pending)
        self._thread(thread_id).push(item)

    def _refusal(self, error: AgentServerError) -> None:
        if error.code in BAD_MESSAGE_CODES and self._limiter is not None:
            self._limiter.record_bad()
        if isinstance(error, FramesDropped):
            self.frames_dropped += error.count
            logger.warning("the server dropped %d frames kept for this session", error.count)
            return
        if error.thread is not None:
            self._deliver(error.thread, error)
            return
        pending = self._pending
        if pending is not None:
            if not pending.future.done():
                pending.future.set_result(error)
            self._release(pending)
            return
        if self._last_continuation is not None:
            # The server names no thread on these refusals: the one
            # continued last is the best guess.
            self._thread(self._last_continuation).push(error)
            self._last_continuation = None
            return
        self.unclaimed.append(error.frame)

    def _set_catalog(self, catalog: Catalog) -> None:
        previous = self._catalog
        if catalog.session_timeout is None and previous is not None:
            catalog = Catalog(
                catalog.user,
                catalog.session,
                catalog.capabilities,
                previous.session_timeout,
                catalog.resumed,
            )
        self._catalog = catalog
        self._tags = catalog.tags
        waiters, self._catalog_waiters = self._catalog_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.on_catalog is not None:
            try:
                self.on_catalog(catalog)
            except Exception:
                logger.exception("on_catalog failed")

    # ------------------------------------------------------------ connection

    async def _open(self) -> _Connection:
        ws = await connect(
            self.url,
            ssl=self._ssl,
            compression=None,
            max_size=MAX_FRAME_BYTES,
            open_timeout=self.open_timeout,
            close_timeout=2.0,
            user_agent_header="agentserver-client (Python)",
            create_connection=_Connection,
        )
        assert isinstance(ws, _Connection)
        return ws

    async def _login(self) -> tuple[_Connection, _Handshake, Catalog, str | None]:
        """A fresh login: a new session."""
        failure: AgentServerError = AuthenticationFailed("authentication failed")
        for attempt in range(self.login_attempts):
            step, wait = self._steps.reserve(self.url, self.user)
            if wait > 0.0:
                logger.info("login as %s waits %.1f s for a fresh TOTP step", self.user, wait)
                await asyncio.sleep(wait)
            code = self._totp.at(step * TOTP_STEP_SECONDS)
            try:
                ws = await self._open()
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
                raise ConnectionLost(f"cannot connect to {self.url}: {error}") from error
            handshake = _Handshake(ws)
            try:
                await ws.send(f'<authenticate user="{escape_attribute(self.user)}" totp="{code}"/>')
                catalog, token = await handshake.wait(self.open_timeout)
            except (_Closed, ConnectionClosed) as closed:
                reason = closed.reason if isinstance(closed, _Closed) else ws.close_frame()[1]
                if reason == "too many connections":
                    raise TooManyConnections(f"{self.user} has too many connections open") from closed
                if reason != "authentication failed":
                    raise ConnectionLost(f"the server closed the connection: {reason or closed}") from closed
                failure = AuthenticationFailed(f"authentication failed (attempt {attempt + 1})")
                logger.info("login as %s refused (attempt %d)", self.user, attempt + 1)
                continue
            except (TimeoutError, ValueError) as error:
                await ws.close()
                raise ConnectionLost(f"no catalog after the login: {error}") from error
            self.logins += 1
            # A fresh session has nothing kept: whatever came before its
            # catalog belongs to no question of this client.
            self.unclaimed.extend(handshake.kept)
            handshake.kept.clear()
            return ws, handshake, catalog, token
        raise failure

    def _install(self, ws: _Connection, handshake: _Handshake, catalog: Catalog, token: str | None) -> None:
        """Makes ``ws`` the connection: its frames go to the client."""
        if self._closing:
            ws.on_text = ws.on_close = None
            asyncio.get_running_loop().create_task(ws.close())
            return
        self._ws = ws
        if token is not None:
            self._token = token
        if self._limiter is not None:
            self._limiter.reset()
        self._set_catalog(catalog)
        for frame in handshake.kept:
            self._dispatch(frame, True)
        for frame in handshake.after:
            self._dispatch(frame)
        ws.on_text = self._dispatch
        ws.on_close = self._on_close
        if ws.protocol.state is not State.OPEN:
            # It closed while the catalog was on its way here.
            ws.on_close = None
            self._on_close_of(ws)
            return
        self._connected.set()

    def _on_close(self) -> None:
        ws = self._ws
        if ws is not None:
            self._on_close_of(ws)

    def _on_close_of(self, ws: _Connection) -> None:
        """The connection is gone: resume, or end with the reason."""
        if ws is not self._ws or self._closing or self._failure is not None:
            return
        self._connected.clear()
        code, reason = ws.close_frame()
        ending = _ending(code, reason)
        if ending is None and not self.resume:
            ending = ConnectionLost(f"connection closed: {code} {reason}".strip())
        if ending is not None:
            self._fail(ending)
            return
        logger.info("connection lost (%s %s); resuming", code, reason)
        self._recovery = asyncio.get_running_loop().create_task(self._recover_or_fail())

    async def _recover_or_fail(self) -> None:
        try:
            await self._recover()
        except AgentServerError as error:
            self._fail(error)

    async def _recover(self) -> None:
        """Resumes the session on a new connection; or, when it cannot be
        resumed and ``relogin`` is on, logs in to a new one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resume_timeout
        delay, backoff = self.reconnect_delay, 0.05
        refused = False
        while not refused:
            if delay > 0.0:
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            if loop.time() >= deadline:
                raise ConnectionLost(f"could not resume within {self.resume_timeout:g} s")
            delay, backoff = backoff, min(backoff * 2, 2.0)
            try:
                ws = await self._open()
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
                logger.info("reconnecting failed: %s", error)
                continue
            handshake = _Handshake(ws)
            try:
                await ws.send(
                    f'<resume-session id="{escape_attribute(self.session_id)}" '
                    f'token="{escape_attribute(self._token or "")}"/>'
                )
                catalog, token = await handshake.wait(self.open_timeout)
            except (_Closed, ConnectionClosed) as closed:
                reason = closed.reason if isinstance(closed, _Closed) else ws.close_frame()[1]
                refused = reason == "authentication failed"
                logger.info("resume closed by the server: %s", reason or closed)
                continue
            except (TimeoutError, ValueError) as error:
                logger.info("resume failed: %s", error)
                ws.on_text = ws.on_close = None
                await ws.close()
                continue
            self.resumes += 1
            self._install(ws, handshake, catalog, token)
            logger.info("session %s resumed", catalog.session)
            return
        if not self.relogin:
            raise SessionLost("the server could not resume the session")
        logger.warning("session %s could not be resumed; logging in again", self.session_id)
        self._lose_session(
            SessionLost("the session could not be resumed after the connection dropped; the client logs in again")
        )
        ws, handshake, catalog, token = await self._login()
        self._install(ws, handshake, catalog, token)

    def _lose_session(self, error: SessionLost) -> None:
        """The session is gone: whatever waited on its threads fails."""
        for state in list(self._threads.values()):
            state.failure = error
            state.wake()
        self._threads = {thread_id: state for thread_id, state in self._threads.items() if state.items}
        self._seen = dict.fromkeys(self._threads)
        pending = self._pending
        if pending is not None:
            if not pending.future.done():
                pending.future.set_result(error)
            self._release(pending)
        self._last_continuation = None
        if self._command is not None and not self._command[1].done():
            self._command[1].set_exception(error)

    def _fail(self, error: AgentServerError) -> None:
        """The client is done: every wait ends with ``error``."""
        if self._failure is None:
            self._failure = error
        self._connected.set()
        for state in self._threads.values():
            state.wake()
        pending = self._pending
        if pending is not None:
            if not pending.future.done():
                pending.future.set_result(error)
            self._release(pending)
        if self._command is not None and not self._command[1].done():
            self._command[1].set_exception(error)
        waiters, self._catalog_waiters = self._catalog_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)


def _ending(code: int, reason: str) -> AgentServerError | None:
    """The error a close from the server stands for, when the session
    cannot be resumed after it; ``None`` when it can."""
    if reason == "flooding":
        return Flooding("the server closed the connection for flooding and ended the session")
    if reason == "session ended":
        return SessionEnded("the session ended")
    if reason == "session resumed elsewhere":
        return SessionTakenOver("another connection resumed this session")
    return None
