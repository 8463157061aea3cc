"""The llm agent: asks an OpenAI-compatible chat-completions endpoint, streams
the answer back as ``<partial>`` payloads, then returns ``<answer>``; keeps
the session's conversation in the key-value bucket ``session``. Listens to
``ask``; the protocol is documented in ``llm_core`` and docs/agents/llm.md.

Built by ``example-agents/python/build.sh`` for the world
``agent-http-keyvalue`` (the folder's ``world`` file). This module is the
WASI glue only: a synchronous HTTP client over the generated
``wasi:http/outgoing-handler`` bindings (blocking on ``wasi:io`` pollables
and streams; no event loop), the ``wasi:keyvalue/store`` bucket, and
``host.emit`` / ``host.log``. Everything else is in ``llm_core``, which
plain CPython tests.

In this world two interfaces are called ``types`` (``agentserver:agent`` and
``wasi:http``), so componentize-py names their modules
``agentserver_agent_types`` and ``wasi_http_types``.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, outgoing_handler, store, streams
from wit_world.imports import wasi_http_types as http
from wit_world.imports.agentserver_agent_types import (
    Envelope,
    Failure_Internal,
    Failure_Malformed,
    Failure_Refused,
)

from llm_core import AgentError, Llm, ProviderError, transport_error, wit_case_name

#: Bytes asked for per read of the response body, and written per call.
READ_SIZE = 16 * 1024
WRITE_SIZE = 4096

_FAILURES = {
    "malformed": Failure_Malformed,
    "refused": Failure_Refused,
    "internal": Failure_Internal,
}


def _drop(resource):
    """Releases a resource now (wasi:http traps when a parent goes before
    its children, so the order cannot be left to the garbage collector)."""
    if resource is not None:
        resource.__exit__(None, None, None)


def _error_code(error, endpoint, detail=None):
    """A wasi:http ``error-code`` value as a :class:`ProviderError`."""
    if detail is None:
        payload = getattr(error, "value", None)
        if payload is not None and not isinstance(payload, (int, str)):
            detail = repr(payload)
        elif payload is not None:
            detail = str(payload)
    return transport_error(wit_case_name(type(error).__name__), endpoint, detail)


def _stream_error(error, endpoint):
    """A ``stream-error::last-operation-failed`` as a :class:`ProviderError`."""
    io_error = error.value
    detail = io_error.to_debug_string()
    code = http.http_error_code(io_error)
    _drop(io_error)
    if code is not None:
        return _error_code(code, endpoint, detail)
    return transport_error("internal-error", endpoint, detail)


class _Response:
    """An incoming response whose body is read with blocking reads."""

    def __init__(self, response, endpoint):
        self._endpoint = endpoint
        self._response = response
        self.status = response.status()
        headers = response.headers()
        content_type = headers.get("content-type")
        _drop(headers)
        self.content_type = content_type[0].decode("latin-1") if content_type else ""
        self._body = response.consume()
        self._stream = self._body.stream()

    def chunks(self):
        while self._stream is not None:
            try:
                data = self._stream.blocking_read(READ_SIZE)
            except Err as error:
                if isinstance(error.value, streams.StreamError_Closed):
                    self._close_body()
                    return
                raise _stream_error(error.value, self._endpoint)
            if data:
                yield data

    def _close_body(self):
        if self._stream is not None:
            _drop(self._stream)
            self._stream = None
        if self._body is not None:
            body, self._body = self._body, None
            _drop(http.IncomingBody.finish(body))

    def close(self):
        self._close_body()
        if self._response is not None:
            _drop(self._response)
            self._response = None


def _fields(headers):
    fields = http.Fields()
    for name, value in headers:
        try:
            fields.append(name, value)
        except Err as error:  # a header the host forbids: go without it
            host.log(host.Level.DEBUG, f"llm: header {name} left out: {error.value}")
    return fields


def send(endpoint, headers, body):
    """POSTs ``body`` to ``endpoint`` over wasi:http and waits for the
    response's head; :class:`ProviderError` when there is none."""
    request = http.OutgoingRequest(_fields(headers))
    try:
        request.set_method(http.Method_Post())
        request.set_scheme(http.Scheme_Https() if endpoint.scheme == "https" else http.Scheme_Http())
        request.set_authority(endpoint.authority)
        request.set_path_with_query(endpoint.path_with_query)
    except Err:
        _drop(request)
        raise ProviderError("transport", f"the host does not take the URL {endpoint.url}")
    outgoing_body = request.body()
    try:
        future = outgoing_handler.handle(request, None)
    except Err as error:
        _drop(outgoing_body)
        raise _error_code(error.value, endpoint)

    write_failed = None
    output = outgoing_body.write()
    try:
        for offset in range(0, len(body), WRITE_SIZE):
            output.blocking_write_and_flush(body[offset : offset + WRITE_SIZE])
    except Err as error:  # the future says why, below
        write_failed = error.value
    finally:
        _drop(output)
    if write_failed is None:
        try:
            http.OutgoingBody.finish(outgoing_body, None)
        except Err as error:
            _drop(future)
            raise _error_code(error.value, endpoint)
    else:
        _drop(outgoing_body)

    pollable = future.subscribe()
    pollable.block()
    _drop(pollable)
    result = future.get()
    _drop(future)
    if result is None or isinstance(result, Err):
        raise ProviderError("transport", f"no response from {endpoint.url}")
    outcome = result.value
    if isinstance(outcome, Err):
        raise _error_code(outcome.value, endpoint)
    response = outcome.value
    if write_failed is not None:
        _drop(response)
        if isinstance(write_failed, streams.StreamError_LastOperationFailed):
            raise _stream_error(write_failed, endpoint)
        raise ProviderError("transport", f"the request body could not be sent to {endpoint.url}")
    return _Response(response, endpoint)


class _Bucket:
    def __init__(self, name, bucket):
        self._name = name
        self._bucket = bucket

    def _failed(self, action, error):
        return AgentError(
            "internal", f"key-value bucket {self._name!r}: {action} failed: {_describe(error)}"
        )

    def get(self, key):
        try:
            return self._bucket.get(key)
        except Err as error:
            raise self._failed(f"get {key!r}", error.value)

    def set(self, key, value):
        try:
            self._bucket.set(key, value)
        except Err as error:
            raise self._failed(f"set {key!r}", error.value)


def _describe(error):
    """A ``wasi:keyvalue/store`` error in words."""
    name = wit_case_name(type(error).__name__)
    detail = getattr(error, "value", None)
    return f"{name}: {detail}" if detail else name


def open_bucket(name):
    try:
        return _Bucket(name, store.open(name))
    except Err as error:
        raise AgentError(
            "internal",
            f"the key-value bucket {name!r} is not available ({_describe(error.value)}): "
            "this agent needs key-value storage granted",
        )


_LEVELS = {"debug": host.Level.DEBUG, "warn": host.Level.WARN}


def _log(level, message):
    host.log(_LEVELS.get(level, host.Level.INFO), message)


def _emit(payload):
    host.emit(payload)


_AGENT = Llm(open_bucket, send, _emit, _log)


class WitWorld(wit_world.WitWorld):
    def handle(self, msg: Envelope) -> list[str]:
        try:
            return _AGENT.handle(msg.tag, msg.payload)
        except AgentError as error:
            raise Err(_FAILURES[error.kind](error.message))
        except Err:
            raise
        except Exception as error:  # a bug here must not trap the instance
            raise Err(Failure_Internal(f"{type(error).__name__}: {error}"))
