#!/usr/bin/env python3
"""A mock OpenAI-compatible chat-completions server, for demos and tests.

Standard library only (Python 3.11)::

    python3 example-agents/mock-llm/server.py --port 18080 [--host 127.0.0.1]
        [--delay-ms N] [--api-key KEY]

prints ``mock-llm listening on http://HOST:PORT`` on stdout once it listens
(``--port 0`` picks a free port, and the line names it), then serves:

``POST /v1/chat/completions``
    An OpenAI chat completion. The answer is a fixed function of the request
    (see :func:`reply_for`)::

        You said: <last user message>. (mock model, N messages in the conversation)

    where N counts every message sent (system, user, assistant, …), so a
    test can check that the whole history arrived. With ``"stream": true``
    the answer is ``text/event-stream`` in OpenAI's format: a first chunk
    with ``delta.role``, then chunks of :data:`WORDS_PER_CHUNK` words in
    ``delta.content`` (each one flushed, ``--delay-ms`` apart), a last chunk
    with ``finish_reason: "stop"``, then ``data: [DONE]``; the body is sent
    with chunked transfer encoding. Without it, one JSON completion. A body
    that is not JSON, or has no ``messages`` list, gets 400 with an OpenAI
    error object; with ``--api-key KEY``, a request without
    ``Authorization: Bearer KEY`` gets 401.

``GET /v1/models``
    The one model, ``mock``.

``GET /v1/requests``
    The JSON list of every request received so far except those to
    ``/v1/requests`` and ``/healthz``, oldest first: ``{"id", "method",
    "path", "headers" (lower-case names), "authorization" (the header's
    value or null), "body" (parsed JSON, else the text, else null)}``.
    ``DELETE /v1/requests`` empties it.

``GET /healthz``
    200, ``ok``.

Every request is logged as one line on stderr::

    mock-llm: POST /v1/chat/completions authorization="Bearer sk-test" stream=true messages=3 -> 200

(``authorization=none`` when the header is absent), so a test can see that a
secret arrived.
"""

import argparse
import http.server
import json
import re
import sys
import threading
import time

#: The model this server claims to be, when the request names none.
MODEL = "mock"
#: How many words each streamed chunk carries.
WORDS_PER_CHUNK = 3
#: The largest request body accepted.
MAX_BODY = 4 * 1024 * 1024

_WORDS = re.compile(r"\S+\s*")


def message_text(message):
    """The text of one chat message: its ``content`` string, or the ``text``
    parts of a list of content parts joined with spaces."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return ""


def reply_for(messages):
    """The mock's answer to a conversation: a fixed function of its last user
    message and of the number of messages."""
    last = ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            last = message_text(message)
            break
    return f"You said: {last}. (mock model, {len(messages)} messages in the conversation)"


def split_chunks(text, words_per_chunk=WORDS_PER_CHUNK):
    """``text`` cut into pieces of ``words_per_chunk`` words, each keeping the
    whitespace after its words: the pieces join back into ``text``."""
    words = _WORDS.findall(text)
    leading = text[: len(text) - len(text.lstrip())]
    pieces = [
        "".join(words[index : index + words_per_chunk])
        for index in range(0, len(words), words_per_chunk)
    ]
    if leading:
        pieces = [leading + (pieces[0] if pieces else "")] + pieces[1:]
    return pieces


def usage(messages, text):
    """A pretend ``usage`` object: words stand in for tokens."""
    prompt = sum(len(message_text(message).split()) for message in messages)
    completion = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class MockState:
    """What every handler thread shares: options and the request log."""

    def __init__(self, delay_ms=0, api_key=None, log=None):
        self.delay_ms = delay_ms
        self.api_key = api_key
        self.log = log if log is not None else sys.stderr
        self.lock = threading.Lock()
        self.requests = []
        self.next_id = 1

    def record(self, entry):
        with self.lock:
            entry = {"id": self.next_id, **entry}
            self.next_id += 1
            self.requests.append(entry)
            return entry["id"]

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def clear(self):
        with self.lock:
            self.requests.clear()

    def write_log(self, line):
        with self.lock:
            try:
                self.log.write(line + "\n")
                self.log.flush()
            except (OSError, ValueError):
                pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-llm/1"

    # set by make_server
    state: MockState = None

    def log_message(self, format, *args):  # one line per request instead
        pass

    # -- helpers -----------------------------------------------------------

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                data += self.rfile.read(size)
                self.rfile.readline(1024)
                if len(data) > MAX_BODY:
                    raise ValueError("body too large")
            return bytes(data)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def _send(self, status, body, content_type="application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _error(self, status, message, kind="invalid_request_error"):
        self._send(status, {"error": {"message": message, "type": kind, "code": None}})

    def _write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _log(self, status, authorization, extra=""):
        auth = "none" if authorization is None else json.dumps(authorization)
        self.state.write_log(
            f"mock-llm: {self.command} {self.path} authorization={auth}{extra} -> {status}"
        )

    def _record(self, body):
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        parsed = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
        return self.state.record(
            {
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "authorization": self.headers.get("Authorization"),
                "body": parsed,
            }
        )

    # -- routes ------------------------------------------------------------

    def do_GET(self):
        authorization = self.headers.get("Authorization")
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._log(200, authorization)
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
            return
        if path == "/v1/requests":
            self._log(200, authorization)
            self._send(200, self.state.snapshot())
            return
        self._record(b"")
        if path == "/v1/models":
            self._log(200, authorization)
            self._send(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "mock-llm"}
            ]})
            return
        self._log(404, authorization)
        self._error(404, f"no route GET {path}")

    def do_DELETE(self):
        authorization = self.headers.get("Authorization")
        if self.path.split("?", 1)[0] == "/v1/requests":
            self.state.clear()
            self._log(200, authorization)
            self._send(200, [])
            return
        self._record(b"")
        self._log(404, authorization)
        self._error(404, f"no route DELETE {self.path}")

    def do_POST(self):
        authorization = self.headers.get("Authorization")
        try:
            body = self._read_body()
        except ValueError as error:
            self.close_connection = True
            self._log(400, authorization)
            self._error(400, f"unreadable body: {error}")
            return
        request_id = self._record(body)
        path = self.path.split("?", 1)[0]
        if path != "/v1/chat/completions":
            self._log(404, authorization)
            self._error(404, f"no route POST {path}")
            return
        if self.state.api_key is not None and authorization != f"Bearer {self.state.api_key}":
            self._log(401, authorization)
            self._error(401, "Incorrect API key provided.", "invalid_api_key")
            return
        try:
            request = json.loads(body)
        except ValueError as error:
            self._log(400, authorization)
            self._error(400, f"the body is not JSON: {error}")
            return
        messages = request.get("messages") if isinstance(request, dict) else None
        if not isinstance(messages, list) or not messages:
            self._log(400, authorization)
            self._error(400, "'messages' must be a non-empty list")
            return
        model = request.get("model") if isinstance(request.get("model"), str) else MODEL
        stream = request.get("stream") is True
        text = reply_for(messages)
        completion_id = f"chatcmpl-mock-{request_id}"
        created = int(time.time())
        extra = f" stream={'true' if stream else 'false'} messages={len(messages)}"
        if not stream:
            self._log(200, authorization, extra)
            self._send(200, {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }],
                "usage": usage(messages, text),
            })
            return

        self._log(200, authorization, extra)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

        def chunk(delta, finish_reason=None):
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in split_chunks(text)]
        events.append(chunk({}, "stop"))
        try:
            for index, event in enumerate(events):
                if index and self.state.delay_ms:
                    time.sleep(self.state.delay_ms / 1000)
                self._write_chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_HEAD = do_GET


class MockServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Room for many clients connecting at once (a benchmark opens 100).
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # a client that hangs up mid-request or mid-stream is not news
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_server(host="127.0.0.1", port=0, delay_ms=0, api_key=None, log=None):
    """A bound (not yet serving) server; ``server.state`` is its
    :class:`MockState`, ``server.url`` its base URL."""
    state = MockState(delay_ms=delay_ms, api_key=api_key, log=log)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = MockServer((host, port), handler)
    server.state = state
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    server.url = f"http://{shown}:{bound_port}"
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=18080, help="port (18080; 0 picks one)")
    parser.add_argument("--delay-ms", type=int, default=0,
                        help="pause between streamed chunks, in milliseconds (0)")
    parser.add_argument("--api-key", default=None,
                        help="answer 401 unless the request carries Authorization: Bearer KEY")
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error("--delay-ms must not be negative")
    server = make_server(args.host, args.port, args.delay_ms, args.api_key)
    print(f"mock-llm listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
