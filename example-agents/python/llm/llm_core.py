"""The llm agent's logic, free of component bindings so that plain CPython
can import and test it (``python3 -m unittest discover -s
example-agents/python/llm``). ``app.py`` plugs in the WASI pieces: the
key-value bucket, the HTTP transport and ``host.emit``.

Protocol
--------

``<ask>question</ask>`` (optionally ``<ask endpoint="URL" model="NAME">``)
    Appends the question to this session's conversation, sends the whole
    conversation to an OpenAI-compatible ``/v1/chat/completions`` endpoint
    with ``"stream": true``, and, while the answer streams in, emits
    ``<partial>text</partial>`` payloads (each holding the text that came
    since the previous one). Returns ``<answer>full text</answer>``, and
    stores the question and the answer in the conversation.

    ``endpoint`` and ``model`` apply to this one request; by default
    :data:`DEFAULT_ENDPOINT` and :data:`DEFAULT_MODEL`.

The conversation is a JSON list of ``{"role", "content"}`` messages kept in
the key-value bucket ``session`` under the key ``conversation``; only the
last :data:`MAX_MESSAGES` messages are kept.

Failures
--------

A provider that cannot be reached or answers with an error does not fail
the call: it is answered with ``<answer error="CODE">explanation</answer>``
(``status="NNN"`` added for ``http-status``), and the conversation is left
as it was (the question is not stored). Codes:

``http-status``        the provider answered with a non-2xx status
``denied``             the host refused the request (destination not granted)
``connection-refused`` nothing listens at the endpoint
``unreachable``        DNS failure, or the destination cannot be reached
``timeout``            a connect, first-byte or read timeout
``tls``                a TLS failure
``transport``          any other wasi:http error
``provider``           the stream carried an error object
``bad-response``       the body was neither an SSE stream nor a completion

The call itself fails (``agent-failed``) only for a payload this agent does
not understand (``malformed``) or a missing key-value store (``internal``).
"""

import json
import re
import urllib.parse
import xml.etree.ElementTree as ElementTree

#: The tag this agent listens to, and the tags it answers with.
ASK_TAG = "ask"
PARTIAL_TAG = "partial"
ANSWER_TAG = "answer"

#: Where questions go unless ``<ask endpoint="…">`` says otherwise (the mock
#: server of example-agents/mock-llm/ listens there by default).
DEFAULT_ENDPOINT = "http://127.0.0.1:18080/v1/chat/completions"
#: The model asked for unless ``<ask model="…">`` says otherwise.
DEFAULT_MODEL = "mock"

#: The key-value bucket and key holding the conversation.
BUCKET = "session"
CONVERSATION_KEY = "conversation"
#: The most messages kept in the conversation (the oldest go first).
MAX_MESSAGES = 64

#: The most ``<partial>`` payloads emitted per call: the host allows 256
#: payloads per call, and the ``<answer>`` must still fit. Text arriving
#: after the last partial is only in the ``<answer>``.
MAX_PARTIALS = 200
#: The most bytes of an error body read and quoted.
MAX_ERROR_BODY = 64 * 1024
MAX_QUOTED = 300


class AgentError(Exception):
    """A failure of the call, as the WIT ``failure`` variant ``kind``
    (``"malformed"``, ``"refused"`` or ``"internal"``)."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


class ProviderError(Exception):
    """The provider could not answer: becomes ``<answer error="code">``."""

    def __init__(self, code, message, status=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# -- XML ----------------------------------------------------------------------

#: Characters XML 1.0 does not allow at all (kept out of payloads).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape_text(text):
    """``text`` escaped for XML character data, with characters XML cannot
    carry dropped."""
    text = _NOT_XML.sub("", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#xD;")
    )


def escape_attribute(text):
    """``text`` escaped for a double-quoted XML attribute value."""
    return (
        escape_text(text)
        .replace('"', "&quot;")
        .replace("\t", "&#x9;")
        .replace("\n", "&#xA;")
    )


def partial_element(text):
    return f"<{PARTIAL_TAG}>{escape_text(text)}</{PARTIAL_TAG}>"


def answer_element(text):
    return f"<{ANSWER_TAG}>{escape_text(text)}</{ANSWER_TAG}>"


def error_answer_element(error):
    """``<answer error="code" [status="NNN"]>message</answer>``."""
    attributes = f' error="{escape_attribute(error.code)}"'
    if error.status is not None:
        attributes += f' status="{error.status}"'
    return f"<{ANSWER_TAG}{attributes}>{escape_text(error.message)}</{ANSWER_TAG}>"


# -- the question -------------------------------------------------------------


class Endpoint:
    """A parsed ``http(s)://authority/path?query`` URL."""

    def __init__(self, url):
        self.url = url
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port  # checks the port
        except ValueError as error:
            raise AgentError("malformed", f"endpoint {url!r} is not a URL: {error}")
        if parts.scheme not in ("http", "https"):
            raise AgentError("malformed", f"endpoint {url!r} must be an http:// or https:// URL")
        if not parts.hostname:
            raise AgentError("malformed", f"endpoint {url!r} names no host")
        if parts.username is not None or parts.password is not None:
            raise AgentError("malformed", f"endpoint {url!r} must not carry credentials")
        self.scheme = parts.scheme
        self.authority = parts.netloc
        self.host = parts.hostname
        self.port = port if port is not None else (443 if parts.scheme == "https" else 80)
        self.path_with_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def __repr__(self):
        return f"Endpoint({self.url!r})"


class Ask:
    """One ``<ask>``: the question and where to send it."""

    def __init__(self, question, endpoint=DEFAULT_ENDPOINT, model=DEFAULT_MODEL):
        self.question = question
        self.endpoint = Endpoint(endpoint)
        self.model = model


def parse_ask(payload):
    """The :class:`Ask` in an ``<ask>`` payload; :class:`AgentError`
    (malformed) otherwise. The question is the element's whole text, child
    elements' text included, with surrounding whitespace removed."""
    try:
        root = ElementTree.fromstring(payload)
    except ElementTree.ParseError as error:
        raise AgentError("malformed", f"the payload is not XML: {error}")
    if root.tag != ASK_TAG:
        raise AgentError("malformed", f"expected <{ASK_TAG}>, got <{root.tag}>")
    question = "".join(root.itertext()).strip()
    if not question:
        raise AgentError("malformed", f"<{ASK_TAG}> holds no question: send <ask>question</ask>")
    model = root.get("model", DEFAULT_MODEL).strip()
    if not model:
        raise AgentError("malformed", "the model attribute is empty")
    return Ask(question, root.get("endpoint", DEFAULT_ENDPOINT).strip(), model)


# -- the conversation ---------------------------------------------------------


def load_conversation(value):
    """The messages stored in ``value`` (bytes, or None when there are none
    yet). A value that is not a list of role/content messages is dropped."""
    if value is None:
        return []
    try:
        messages = json.loads(bytes(value).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(messages, list):
        return []
    return [
        {"role": message["role"], "content": message["content"]}
        for message in messages
        if isinstance(message, dict)
        and isinstance(message.get("role"), str)
        and isinstance(message.get("content"), str)
    ]


def dump_conversation(messages):
    """``messages`` as the bytes stored, the last :data:`MAX_MESSAGES` only."""
    return json.dumps(messages[-MAX_MESSAGES:], ensure_ascii=False).encode("utf-8")


def request_body(model, messages, stream=True):
    """The JSON body of a chat-completions request."""
    body = {"model": model, "messages": messages}
    if stream:
        body["stream"] = True
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def request_headers(body):
    """The request's headers, as ``(name, value bytes)`` pairs. No
    ``authorization``: the host adds it from a grant."""
    return [
        ("content-type", b"application/json"),
        ("accept", b"text/event-stream"),
        ("content-length", str(len(body)).encode()),
    ]


# -- the answer ---------------------------------------------------------------


class SseParser:
    """Incremental ``text/event-stream`` parser: :meth:`feed` takes bytes as
    they arrive and returns the ``data`` of every event completed by them
    (the ``data:`` lines of one event joined by newlines); :meth:`finish`
    returns an event left open at the end of the stream. Lines may end in
    LF, CRLF or CR; ``:`` comments and fields other than ``data`` are
    ignored."""

    def __init__(self):
        self._buffer = b""
        self._data = []
        self._has_data = False

    def _line(self, line, events):
        if not line:
            if self._has_data:
                events.append("\n".join(self._data))
            self._data = []
            self._has_data = False
            return
        text = line.decode("utf-8", "replace")
        if text.startswith(":"):
            return
        name, _, value = text.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True

    def feed(self, data):
        events = []
        buffer = self._buffer + bytes(data)
        start = 0
        length = len(buffer)
        while True:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if lf >= 0 and (cr < 0 or lf < cr):
                self._line(buffer[start:lf], events)
                start = lf + 1
            else:  # a CR first: CRLF or a lone CR
                if cr + 1 == length:
                    break  # a CR at the end: wait for what follows it
                self._line(buffer[start:cr], events)
                start = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
        self._buffer = buffer[start:]
        return events

    def finish(self):
        events = []
        if self._buffer:
            line = self._buffer.rstrip(b"\r")
            self._buffer = b""
            self._line(line, events)
        if self._has_data:
            self._line(b"", events)
        return events


def _quote(text):
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "…"


def _error_object_message(error):
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
        return json.dumps(error)
    return str(error)


class CompletionStream:
    """The text of a streamed chat completion, as its bytes arrive:
    :meth:`feed` returns the content deltas the bytes completed; ``done`` is
    set by ``data: [DONE]``; ``text`` is everything so far."""

    def __init__(self):
        self._parser = SseParser()
        self.parts = []
        self.done = False
        self.events = 0
        self.finish_reason = None

    @property
    def text(self):
        return "".join(self.parts)

    def _events(self, events):
        deltas = []
        for data in events:
            if self.done:
                break
            if data.strip() == "[DONE]":
                self.done = True
                break
            self.events += 1
            try:
                chunk = json.loads(data)
            except ValueError:
                raise ProviderError("bad-response", f"a stream event is not JSON: {_quote(data)}")
            if not isinstance(chunk, dict):
                raise ProviderError("bad-response", f"a stream event is not an object: {_quote(data)}")
            if "error" in chunk and chunk["error"]:
                raise ProviderError("provider", _quote(_error_object_message(chunk["error"])))
            choices = chunk.get("choices") or []
            if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                continue  # e.g. a usage-only chunk
            choice = choices[0]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                self.parts.append(content)
                deltas.append(content)
        return deltas

    def feed(self, data):
        return self._events(self._parser.feed(data))

    def finish(self):
        """The deltas of an event left open at the end; then the text, or
        :class:`ProviderError` when the stream held no completion at all."""
        deltas = self._events(self._parser.finish())
        if not self.done and self.events == 0:
            raise ProviderError("bad-response", "the stream ended without a completion")
        return deltas


def completion_text(body):
    """The answer in a non-streamed JSON chat completion."""
    try:
        completion = json.loads(bytes(body).decode("utf-8"))
        if isinstance(completion, dict) and completion.get("error"):
            raise ProviderError("provider", _quote(_error_object_message(completion["error"])))
        content = completion["choices"][0]["message"]["content"]
    except ProviderError:
        raise
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        raise ProviderError("bad-response", f"not a chat completion: {_quote(bytes(body)[:400].decode('utf-8', 'replace'))}")
    if not isinstance(content, str):
        raise ProviderError("bad-response", "the completion holds no text")
    return content


def status_error(status, body):
    """The :class:`ProviderError` for an HTTP error status, quoting the
    provider's ``error.message`` (or the start of its body)."""
    detail = ""
    text = bytes(body).decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and parsed.get("error"):
            detail = _error_object_message(parsed["error"])
    except ValueError:
        pass
    if not detail:
        detail = text
    message = f"the provider answered HTTP {status}"
    if detail.strip():
        message += f": {_quote(detail)}"
    return ProviderError("http-status", message, status)


#: wasi:http error-code cases (kebab-case) -> the ``error`` attribute.
_TRANSPORT_CODES = {
    "http-request-denied": "denied",
    "connection-refused": "connection-refused",
    "dns-timeout": "unreachable",
    "dns-error": "unreachable",
    "destination-not-found": "unreachable",
    "destination-unavailable": "unreachable",
    "destination-ip-prohibited": "denied",
    "destination-ip-unroutable": "unreachable",
    "connection-timeout": "timeout",
    "connection-read-timeout": "timeout",
    "connection-write-timeout": "timeout",
    "http-response-timeout": "timeout",
    "tls-protocol-error": "tls",
    "tls-certificate-error": "tls",
    "tls-alert-received": "tls",
}

_TRANSPORT_EXPLANATIONS = {
    "denied": "the host refused the request: is this agent granted HTTP to {where}?",
    "connection-refused": "nothing accepts connections at {where}",
    "unreachable": "{where} cannot be reached",
    "timeout": "{where} did not answer in time",
    "tls": "the TLS connection to {where} failed",
    "transport": "the request to {where} failed",
}


def wit_case_name(class_name):
    """``ErrorCode_HttpRequestDenied`` (or ``HttpRequestDenied``) ->
    ``http-request-denied``, the case's WIT name in lower case."""
    name = class_name.rsplit("_", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def transport_error(case, endpoint, detail=None):
    """The :class:`ProviderError` for the wasi:http ``error-code`` ``case``
    (kebab-case) met while talking to ``endpoint``."""
    code = _TRANSPORT_CODES.get(case, "transport")
    where = f"{endpoint.scheme}://{endpoint.authority}" if endpoint is not None else "the endpoint"
    message = _TRANSPORT_EXPLANATIONS[code].format(where=where) + f" (wasi:http error-code {case}"
    if detail:
        message += f": {_quote(detail)}"
    return ProviderError(code, message + ")")


# -- one call -----------------------------------------------------------------


class Partials:
    """Emits ``<partial>`` payloads, at most :data:`MAX_PARTIALS` per call."""

    def __init__(self, emit, limit=MAX_PARTIALS):
        self._emit = emit
        self._limit = limit
        self.count = 0

    def push(self, text):
        if text and self.count < self._limit:
            self._emit(partial_element(text))
            self.count += 1


class Llm:
    """The agent, with its outside world passed in:

    ``open_bucket(name)``
        a bucket with ``get(key) -> bytes | None`` and ``set(key, bytes)``;
        raises :class:`AgentError` when it cannot be had.
    ``send(endpoint, headers, body)``
        sends a POST; returns a response with ``status`` (int),
        ``content_type`` (str), ``chunks()`` (an iterator over the body's
        bytes as they arrive) and ``close()``; raises :class:`ProviderError`,
        also from ``chunks()``.
    ``emit(payload)``
        sends a payload on the thread now.
    ``log(level, message)``
        a log line, ``level`` being ``"debug"`` or ``"warn"`` (optional).
    """

    def __init__(self, open_bucket, send, emit, log=None):
        self.open_bucket = open_bucket
        self.send = send
        self.emit = emit
        self.log = log or (lambda level, message: None)

    def handle(self, tag, payload):
        """The payloads returned for one message; :class:`AgentError` for a
        failed call."""
        if tag != ASK_TAG:
            raise AgentError("malformed", f"this agent handles <{ASK_TAG}>, not <{tag}>")
        ask = parse_ask(payload)
        bucket = self.open_bucket(BUCKET)
        history = load_conversation(bucket.get(CONVERSATION_KEY))
        messages = history + [{"role": "user", "content": ask.question}]
        self.log("debug", f"llm: {len(messages)} messages to {ask.endpoint.url} (model {ask.model})")
        try:
            text, partials = self._complete(ask, messages)
        except ProviderError as error:
            self.log("warn", f"llm: {error.code}: {error.message}")
            return [error_answer_element(error)]
        messages.append({"role": "assistant", "content": text})
        try:
            bucket.set(CONVERSATION_KEY, dump_conversation(messages))
        except AgentError as error:  # the answer was streamed already: keep it
            self.log("warn", f"llm: the conversation was not saved: {error.message}")
        self.log("debug", f"llm: answered in {len(text)} characters, {partials} partials")
        return [answer_element(text)]

    def _complete(self, ask, messages):
        body = request_body(ask.model, messages, stream=True)
        response = self.send(ask.endpoint, request_headers(body), body)
        try:
            if not 200 <= response.status < 300:
                raise status_error(response.status, _read_some(response, MAX_ERROR_BODY))
            content_type = (response.content_type or "").split(";")[0].strip().lower()
            if content_type == "application/json":
                return completion_text(_read_some(response, None)), 0
            if content_type not in ("text/event-stream", ""):
                raise ProviderError(
                    "bad-response",
                    f"expected text/event-stream, got {_quote(response.content_type)}",
                )
            stream = CompletionStream()
            partials = Partials(self.emit)
            for chunk in response.chunks():
                partials.push("".join(stream.feed(chunk)))
                if stream.done:
                    break
            partials.push("".join(stream.finish()))
            return stream.text, partials.count
        finally:
            response.close()


def _read_some(response, limit):
    data = bytearray()
    for chunk in response.chunks():
        data += chunk
        if limit is not None and len(data) >= limit:
            break
    return bytes(data[:limit] if limit is not None else data)
