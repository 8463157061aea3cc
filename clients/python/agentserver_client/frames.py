"""The frames the server sends, parsed: answer envelopes, the catalog and
the verdicts of privileged commands; and helpers to build XML to send.

Every frame from the server is in exclusive canonical form, so the
envelope, which the client reads for every answer, is read with a few string
searches; the rest goes through :mod:`xml.etree.ElementTree`.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Iterator

_MESSAGE_START = "<message><meta>"
_MESSAGE_END = "</message>"


def escape(text: str) -> str:
    """``text`` escaped for XML character data (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attribute(value: str) -> str:
    """``value`` escaped for a double-quoted XML attribute."""
    return escape(value).replace('"', "&quot;")


def element(tag: str, text: str = "", /, **attributes: str) -> str:
    """An XML element: ``element("calculate", "2 + 3")`` is
    ``<calculate>2 + 3</calculate>``; attribute names use ``_`` for ``-``
    (``element("hold", ms="50")`` is ``<hold ms="50"></hold>``). Text and
    attribute values are escaped."""
    attrs = "".join(
        f' {name.replace("_", "-")}="{escape_attribute(value)}"' for name, value in attributes.items()
    )
    return f"<{tag}{attrs}>{escape(text)}</{tag}>"


def _unescape(text: str) -> str:
    return html.unescape(text) if "&" in text else text


_ROOT_NAME = re.compile(r"<([^\s/>]+)")


class Envelope:
    """One ``<message>`` from the server: an agent's payload on a thread.

    Attributes:
        sender: the agent that produced the payload (``<from>``).
        thread: the thread it belongs to.
        payload: the payload element, canonical XML, exactly as received.
        tag: the payload's root tag as written (``prefix:name`` if prefixed).
        huh: the repair notes (``<huh>``): what the server repaired in the
            message that led to this one, and in this payload.
        xml: the whole frame, as received.
        resumed: whether the server kept this frame while the connection
            was down and delivered it when the client resumed.
    """

    __slots__ = ("sender", "thread", "payload", "tag", "huh", "xml", "resumed", "_element")

    def __init__(
        self,
        sender: str,
        thread: str,
        payload: str,
        huh: tuple[str, ...] = (),
        xml: str = "",
        resumed: bool = False,
    ) -> None:
        self.sender = sender
        self.thread = thread
        self.payload = payload
        match = _ROOT_NAME.match(payload)
        self.tag = match.group(1) if match else ""
        self.huh = huh
        self.xml = xml
        self.resumed = resumed
        self._element: ET.Element | None = None

    def __repr__(self) -> str:
        return f"Envelope(sender={self.sender!r}, thread={self.thread!r}, payload={self.payload!r}, huh={self.huh!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return (self.sender, self.thread, self.payload, self.huh) == (other.sender, other.thread, other.payload, other.huh)

    @classmethod
    def parse(cls, frame: str, *, resumed: bool = False) -> Envelope:
        """Reads a ``<message>`` frame.

        Raises:
            ValueError: when the frame is not a ``<message>`` with a thread.
        """
        # The usual frame, read in one go:
        # <message><meta><from>A</from><thread>T</thread></meta>P</message>
        if frame.startswith("<message><meta><from>") and frame.endswith("</message>"):
            middle = frame.find("</from><thread>", 21)
            end = frame.find("</thread></meta>", middle)
            if middle > 0 and end > 0:
                sender = frame[21:middle]
                thread = frame[middle + 15 : end]
                if "<" not in thread and "<" not in sender:
                    if "&" in sender:
                        sender = html.unescape(sender)
                    if "&" in thread:
                        thread = html.unescape(thread)
                    if thread:
                        return cls(sender, thread, frame[end + 16 : -10], (), frame, resumed)
        if frame.startswith(_MESSAGE_START) and frame.endswith(_MESSAGE_END):
            meta_end = frame.find("</meta>", len(_MESSAGE_START))
            if meta_end >= 0:
                fields = _meta_fields(frame[len(_MESSAGE_START) : meta_end])
                if fields is not None:
                    sender, thread, huh = fields
                    if thread:
                        payload = frame[meta_end + len("</meta>") : -len(_MESSAGE_END)]
                        return cls(sender, thread, payload, huh, frame, resumed)
        return cls._parse_slowly(frame, resumed)

    @classmethod
    def _parse_slowly(cls, frame: str, resumed: bool) -> Envelope:
        try:
            root = ET.fromstring(frame)
        except ET.ParseError as error:
            raise ValueError(f"not a <message>: {frame[:80]!r}") from error
        meta = root.find("meta")
        children = [child for child in root if child.tag != "meta"]
        if root.tag != "message" or meta is None or len(children) != 1:
            raise ValueError(f"not a <message>: {frame[:80]!r}")
        thread = meta.findtext("thread") or ""
        if not thread:
            raise ValueError(f"a <message> without a thread: {frame[:80]!r}")
        children[0].tail = None
        payload = ET.tostring(children[0], encoding="unicode")
        huh = tuple(note.text or "" for note in meta.findall("huh"))
        return cls(meta.findtext("from") or "", thread, payload, huh, frame, resumed)

    @property
    def element(self) -> ET.Element:
        """The payload parsed (names of namespaced elements in Clark
        notation, ``{uri}name``)."""
        if self._element is None:
            self._element = ET.fromstring(self.payload)
        return self._element

    @property
    def text(self) -> str:
        """The payload's text content, child elements' text included."""
        return "".join(self.element.itertext())

    def get(self, attribute: str, default: str | None = None) -> str | None:
        """An attribute of the payload's root element."""
        return self.element.get(attribute, default)


def _meta_fields(meta: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(from, thread, huh notes) of canonical ``<meta>`` contents; ``None``
    when they hold something else."""
    sender = thread = ""
    huh: list[str] = []
    at = 0
    while at < len(meta):
        if meta[at] != "<":
            return None
        close = meta.find(">", at)
        if close < 0:
            return None
        name = meta[at + 1 : close]
        end_tag = f"</{name}>"
        end = meta.find(end_tag, close)
        if end < 0:
            return None
        value = _unescape(meta[close + 1 : end])
        if name == "from":
            sender = value
        elif name == "thread":
            thread = value
        elif name == "huh":
            huh.append(value)
        elif name != "to":
            return None
        at = end + len(end_tag)
    return sender, thread, tuple(huh)


@dataclass(frozen=True)
class Capability:
    """One line of the catalog: a tag the user may send and the agent
    that listens to it."""

    tag: str
    agent: str
    description: str


@dataclass(frozen=True)
class Catalog:
    """The tags the user may send that some agent listens to, as the
    server's ``<catalog>`` says. A fresh one arrives whenever agents come
    or go or the user's grants change.

    ``"calculate" in catalog`` tells whether the tag may be sent.

    Attributes:
        user: who is logged in.
        session: the session id.
        capabilities: the tags, sorted by tag.
        session_timeout: seconds the session outlives a dropped connection.
        resumed: whether this catalog closed a resume.
    """

    user: str
    session: str
    capabilities: tuple[Capability, ...]
    session_timeout: int | None = None
    resumed: bool = False

    @property
    def tags(self) -> frozenset[str]:
        """Every tag of the catalog."""
        return frozenset(capability.tag for capability in self.capabilities)

    def __contains__(self, tag: object) -> bool:
        return any(capability.tag == tag for capability in self.capabilities)

    def __iter__(self) -> Iterator[Capability]:
        return iter(self.capabilities)

    def __len__(self) -> int:
        return len(self.capabilities)

    def agent(self, tag: str) -> str | None:
        """The agent listening to ``tag``, if the catalog has it."""
        for capability in self.capabilities:
            if capability.tag == tag:
                return capability.agent
        return None


def parse_catalog(frame: str) -> tuple[Catalog, str | None]:
    """Reads a ``<catalog>`` frame: the catalog and its resume token (only
    the first catalog of each connection carries one).

    Raises:
        ValueError: when the frame is not a catalog.
    """
    try:
        root = ET.fromstring(frame)
    except ET.ParseError as error:
        raise ValueError(f"not a <catalog>: {frame[:80]!r}") from error
    if root.tag != "catalog":
        raise ValueError(f"not a <catalog>: {frame[:80]!r}")
    timeout = root.get("session-timeout")
    capabilities = tuple(
        Capability(
            tag=capability.get("tag", ""),
            agent=capability.get("agent", ""),
            description="".join(capability.itertext()),
        )
        for capability in root.findall("capability")
    )
    catalog = Catalog(
        user=root.get("user", ""),
        session=root.get("session", ""),
        capabilities=capabilities,
        session_timeout=int(timeout) if timeout is not None and timeout.isdigit() else None,
        resumed=root.get("resumed") == "true",
    )
    return catalog, root.get("resume-token")


@dataclass(frozen=True)
class PrivilegedResult:
    """The server's verdict on a signed privileged command.

    Attributes:
        id: the command's id (absent when the command could not be read).
        status: ``applied`` or ``refused``.
        reason: why it was refused (empty when applied).
        xml: the frame as received.
    """

    id: str | None
    status: str
    reason: str
    xml: str = field(default="", repr=False)

    @property
    def applied(self) -> bool:
        """Whether the command was applied."""
        return self.status == "applied"

    @classmethod
    def parse(cls, frame: str) -> PrivilegedResult:
        """Reads a ``<privileged-result>`` frame.

        Raises:
            ValueError: when the frame is not one.
        """
        try:
            root = ET.fromstring(frame)
        except ET.ParseError as error:
            raise ValueError(f"not a <privileged-result>: {frame[:80]!r}") from error
        if root.tag != "privileged-result":
            raise ValueError(f"not a <privileged-result>: {frame[:80]!r}")
        return cls(root.get("id"), root.get("status", ""), "".join(root.itertext()), frame)


def command_id(document: str) -> str | None:
    """The ``id`` of a signed ``<privileged-command>``'s payload, if it can
    be read."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError:
        return None
    payload = root.find("payload")
    return payload.get("id") if payload is not None else None


class Answer:
    """What :meth:`Client.ask` returns: the frames of the thread up to and
    including its first final frame (one whose tag is not a stream tag such
    as ``partial``), and, with ``settle``, those that followed it closely.

    Attributes:
        thread: the thread the question started (or continued).
        frames: the envelopes, in the order they arrived.
        final: the final frame: the first whose tag is not a stream tag (the
            last frame if none is).
    """

    __slots__ = ("thread", "frames", "final")

    def __init__(
        self,
        thread: str,
        frames: tuple[Envelope, ...],
        stream_tags: frozenset[str] = frozenset({"partial"}),
    ) -> None:
        if not frames:
            raise ValueError("an answer has at least one frame")
        self.thread = thread
        self.frames = frames
        for frame in frames:
            if frame.tag not in stream_tags:
                break
        self.final = frame

    def __repr__(self) -> str:
        return f"Answer(thread={self.thread!r}, frames={self.frames!r})"

    @property
    def partials(self) -> tuple[Envelope, ...]:
        """The frames before the final one."""
        return self.frames[: self.frames.index(self.final)]

    @property
    def payload(self) -> str:
        """The final frame's payload, canonical XML."""
        return self.final.payload

    @property
    def sender(self) -> str:
        """The agent that sent the final frame."""
        return self.final.sender

    @property
    def tag(self) -> str:
        """The final payload's root tag."""
        return self.final.tag

    @property
    def text(self) -> str:
        """The final payload's text content."""
        return self.final.text

    @property
    def huh(self) -> tuple[str, ...]:
        """The final frame's repair notes."""
        return self.final.huh
