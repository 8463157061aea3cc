"""Tests of the mock LLM server:
``python3 -m unittest discover -s example-agents/mock-llm``.

Each test class starts the server on an ephemeral port in a thread and talks
to it over real HTTP with ``http.client``.
"""

import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
import unittest

from server import make_server, reply_for, split_chunks

HERE = os.path.dirname(os.path.abspath(__file__))


class ServerCase(unittest.TestCase):
    delay_ms = 0
    api_key = None

    @classmethod
    def setUpClass(cls):
        cls.log = io.StringIO()
        cls.server = make_server("127.0.0.1", 0, cls.delay_ms, cls.api_key, cls.log)
        cls.port = cls.server.server_address[1]
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.thread.join(5)

    def setUp(self):
        self.server.state.clear()

    def request(self, method, path, body=None, headers=None):
        """``(status, headers, body bytes)`` of one request."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def chat(self, messages, stream=False, headers=None, **extra):
        body = {"model": "mock", "messages": messages, **extra}
        if stream:
            body["stream"] = True
        return self.request(
            "POST", "/v1/chat/completions", body,
            {"Content-Type": "application/json", **(headers or {})},
        )


def sse_events(body):
    """The ``data:`` payloads of an SSE body, in order."""
    events = []
    for block in body.decode().split("\n\n"):
        data = [line[len("data: "):] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            events.append("\n".join(data))
    return events


class PureFunctionsTest(unittest.TestCase):
    def test_reply_names_the_last_user_message_and_the_count(self):
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second question"},
        ]
        self.assertEqual(
            reply_for(messages),
            "You said: second question. (mock model, 4 messages in the conversation)",
        )

    def test_content_parts(self):
        messages = [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"},
        ]}]
        self.assertEqual(
            reply_for(messages), "You said: a b. (mock model, 1 messages in the conversation)"
        )

    def test_chunks_join_back(self):
        for text in ["one two three four five six seven", "  lead and trail  ", "x", ""]:
            pieces = split_chunks(text)
            self.assertEqual("".join(pieces), text)
            for piece in pieces:
                self.assertLessEqual(len(piece.split()), 3)
        self.assertEqual(split_chunks("a b c d e"), ["a b c ", "d e"])


class CompletionTest(ServerCase):
    def test_healthz(self):
        status, _, body = self.request("GET", "/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))

    def test_json_completion(self):
        status, headers, body = self.chat([{"role": "user", "content": "hello"}])
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        completion = json.loads(body)
        self.assertEqual(completion["object"], "chat.completion")
        self.assertEqual(completion["model"], "mock")
        choice = completion["choices"][0]
        self.assertEqual(choice["finish_reason"], "stop")
        self.assertEqual(choice["message"], {
            "role": "assistant",
            "content": "You said: hello. (mock model, 1 messages in the conversation)",
        })

    def test_the_whole_history_is_counted(self):
        messages = [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "You said: one."},
            {"role": "user", "content": "two"},
        ]
        _, _, body = self.chat(messages)
        self.assertEqual(
            json.loads(body)["choices"][0]["message"]["content"],
            "You said: two. (mock model, 3 messages in the conversation)",
        )

    def test_stream(self):
        status, headers, body = self.chat(
            [{"role": "user", "content": "tell me a story please"}], stream=True
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/event-stream")
        self.assertEqual(headers["Transfer-Encoding"], "chunked")
        events = sse_events(body)
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(event) for event in events[:-1]]
        for chunk in chunks:
            self.assertEqual(chunk["object"], "chat.completion.chunk")
        self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
        self.assertEqual(chunks[-1]["choices"][0], {"index": 0, "delta": {}, "finish_reason": "stop"})
        contents = [chunk["choices"][0]["delta"]["content"] for chunk in chunks[1:-1]]
        self.assertGreater(len(contents), 3)
        self.assertEqual(
            "".join(contents),
            "You said: tell me a story please. (mock model, 1 messages in the conversation)",
        )
        self.assertEqual(contents[0], "You said: tell ")

    def test_bad_requests(self):
        status, _, body = self.request("POST", "/v1/chat/completions", b"{not json")
        self.assertEqual(status, 400)
        self.assertIn("not JSON", json.loads(body)["error"]["message"])
        status, _, body = self.request("POST", "/v1/chat/completions", {"model": "mock"})
        self.assertEqual(status, 400)
        self.assertIn("messages", json.loads(body)["error"]["message"])
        status, _, _ = self.request("GET", "/nowhere")
        self.assertEqual(status, 404)

    def test_chunked_request_body(self):
        body = json.dumps({"messages": [{"role": "user", "content": "chunky"}]}).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(
                "POST", "/v1/chat/completions", body=iter([body[:10], body[10:]]),
                headers={"Content-Type": "application/json"}, encode_chunked=True,
            )
            response = connection.getresponse()
            self.assertEqual(response.status, 200)
            self.assertIn("You said: chunky.", json.loads(response.read())["choices"][0]["message"]["content"])
        finally:
            connection.close()

    def test_requests_are_recorded_and_logged(self):
        self.chat([{"role": "user", "content": "secret?"}], stream=True,
                  headers={"Authorization": "Bearer sk-test-123"})
        self.chat([{"role": "user", "content": "anonymous"}])
        self.request("GET", "/healthz")
        status, _, body = self.request("GET", "/v1/requests")
        self.assertEqual(status, 200)
        recorded = json.loads(body)
        self.assertEqual(len(recorded), 2)
        first, second = recorded
        self.assertEqual(first["method"], "POST")
        self.assertEqual(first["path"], "/v1/chat/completions")
        self.assertEqual(first["authorization"], "Bearer sk-test-123")
        self.assertEqual(first["headers"]["authorization"], "Bearer sk-test-123")
        self.assertEqual(first["headers"]["content-type"], "application/json")
        self.assertEqual(first["body"]["messages"], [{"role": "user", "content": "secret?"}])
        self.assertTrue(first["body"]["stream"])
        self.assertIsNone(second["authorization"])
        self.assertNotIn("authorization", second["headers"])
        self.assertLess(first["id"], second["id"])

        lines = self.log.getvalue().splitlines()
        self.assertIn(
            'mock-llm: POST /v1/chat/completions authorization="Bearer sk-test-123" '
            "stream=true messages=1 -> 200",
            lines,
        )
        self.assertIn(
            "mock-llm: POST /v1/chat/completions authorization=none "
            "stream=false messages=1 -> 200",
            lines,
        )

        status, _, _ = self.request("DELETE", "/v1/requests")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(self.request("GET", "/v1/requests")[2]), [])

    def test_keep_alive(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            for word in ["a", "b"]:
                connection.request(
                    "POST", "/v1/chat/completions",
                    body=json.dumps({"messages": [{"role": "user", "content": word}], "stream": True}),
                    headers={"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                self.assertIn(f"You said: {word}", "".join(
                    json.loads(event)["choices"][0]["delta"].get("content", "")
                    for event in sse_events(response.read())[:-1]
                ))
        finally:
            connection.close()


class DelayTest(ServerCase):
    delay_ms = 40

    def test_chunks_arrive_apart(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(
                "POST", "/v1/chat/completions",
                body=json.dumps({"messages": [{"role": "user", "content": "slowly"}], "stream": True}),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            arrivals = []
            while True:
                line = response.fp.readline()  # the chunked encoding's size lines and data
                if not line:
                    break
                if line.startswith(b"data: "):
                    arrivals.append((time.monotonic(), line))
                    if line.startswith(b"data: [DONE]"):
                        break
        finally:
            connection.close()
        self.assertGreaterEqual(len(arrivals), 5)
        spread = arrivals[-1][0] - arrivals[0][0]
        self.assertGreaterEqual(spread, 0.04 * (len(arrivals) - 2))


class ApiKeyTest(ServerCase):
    api_key = "sk-right"

    def test_wrong_or_missing_key_is_401(self):
        status, _, body = self.chat([{"role": "user", "content": "x"}])
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body)["error"]["type"], "invalid_api_key")
        status, _, _ = self.chat([{"role": "user", "content": "x"}],
                                 headers={"Authorization": "Bearer sk-wrong"})
        self.assertEqual(status, 401)
        status, _, _ = self.chat([{"role": "user", "content": "x"}],
                                 headers={"Authorization": "Bearer sk-right"})
        self.assertEqual(status, 200)


class CommandLineTest(unittest.TestCase):
    def test_prints_where_it_listens(self):
        process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            line = process.stdout.readline().strip()
            self.assertRegex(line, r"^mock-llm listening on http://127\.0\.0\.1:\d+$")
            port = int(line.rsplit(":", 1)[1])
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/healthz", headers={"Authorization": "Bearer abc"})
            self.assertEqual(connection.getresponse().status, 200)
            connection.close()
        finally:
            process.terminate()
            process.wait(10)
            stderr = process.stderr.read()
            process.stdout.close()
            process.stderr.close()
        self.assertIn('mock-llm: GET /healthz authorization="Bearer abc" -> 200', stderr)


if __name__ == "__main__":
    unittest.main()
