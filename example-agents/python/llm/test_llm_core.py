"""Tests of the llm agent's logic with plain CPython:
``python3 -m unittest discover -s example-agents/python/llm``.

The last tests run the agent's logic against the mock server of
example-agents/mock-llm/ over real HTTP (``http.client`` standing in for
wasi:http).
"""

import http.client
import json
import os
import re
import sys
import threading
import unittest
import xml.etree.ElementTree as ElementTree

from llm_core import (
    DEFAULT_ENDPOINT,
    DEFAULT_MODEL,
    MAX_MESSAGES,
    AgentError,
    CompletionStream,
    Endpoint,
    Llm,
    Partials,
    ProviderError,
    SseParser,
    answer_element,
    completion_text,
    dump_conversation,
    error_answer_element,
    escape_attribute,
    escape_text,
    load_conversation,
    parse_ask,
    partial_element,
    request_body,
    request_headers,
    status_error,
    transport_error,
    wit_case_name,
)

MOCK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "mock-llm")


def sse(*events):
    return b"".join(b"data: " + event.encode() + b"\n\n" for event in events)


def delta(text):
    return json.dumps({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


class XmlTest(unittest.TestCase):
    def test_escape(self):
        self.assertEqual(escape_text("a < b & c > d\r\n"), "a &lt; b &amp; c &gt; d&#xD;\n")
        self.assertEqual(escape_text("bell\x07 nul\x00 ok\t"), "bell nul ok\t")
        self.assertEqual(escape_attribute('say "hi"\n'), "say &quot;hi&quot;&#xA;")

    def test_elements_parse_back(self):
        text = 'x < y && "z" > 1 </answer>'
        for element in (partial_element(text), answer_element(text)):
            self.assertEqual(ElementTree.fromstring(element).text, text)
        error = error_answer_element(ProviderError("http-status", "bad <key>", 401))
        self.assertEqual(error, '<answer error="http-status" status="401">bad &lt;key&gt;</answer>')
        root = ElementTree.fromstring(error_answer_element(ProviderError("denied", "no")))
        self.assertEqual(root.attrib, {"error": "denied"})


class AskTest(unittest.TestCase):
    def test_defaults(self):
        ask = parse_ask("<ask>  What is 2+2?\n</ask>")
        self.assertEqual(ask.question, "What is 2+2?")
        self.assertEqual(ask.model, DEFAULT_MODEL)
        self.assertEqual(ask.endpoint.url, DEFAULT_ENDPOINT)
        self.assertEqual(ask.endpoint.scheme, "http")
        self.assertEqual(ask.endpoint.authority, "127.0.0.1:18080")
        self.assertEqual(ask.endpoint.path_with_query, "/v1/chat/completions")

    def test_overrides(self):
        ask = parse_ask(
            '<ask endpoint="https://api.example.com/v1/chat/completions?x=1" model="gpt-4o-mini">'
            "Hi &amp; bye</ask>"
        )
        self.assertEqual(ask.question, "Hi & bye")
        self.assertEqual(ask.model, "gpt-4o-mini")
        self.assertEqual(ask.endpoint.scheme, "https")
        self.assertEqual(ask.endpoint.authority, "api.example.com")
        self.assertEqual(ask.endpoint.port, 443)
        self.assertEqual(ask.endpoint.path_with_query, "/v1/chat/completions?x=1")

    def test_child_elements_give_their_text(self):
        self.assertEqual(parse_ask("<ask>what is <b>bold</b>?</ask>").question, "what is bold?")

    def assert_malformed(self, payload, part):
        with self.assertRaises(AgentError) as caught:
            parse_ask(payload)
        self.assertEqual(caught.exception.kind, "malformed")
        self.assertIn(part, caught.exception.message)

    def test_malformed(self):
        self.assert_malformed("<ask>unclosed", "not XML")
        self.assert_malformed("<question>x</question>", "expected <ask>")
        self.assert_malformed("<ask>   </ask>", "no question")
        self.assert_malformed('<ask model="">x</ask>', "model")
        self.assert_malformed('<ask endpoint="ftp://x/y">x</ask>', "http:// or https://")
        self.assert_malformed('<ask endpoint="http:///path">x</ask>', "no host")
        self.assert_malformed('<ask endpoint="http://h:99999/">x</ask>', "not a URL")
        self.assert_malformed('<ask endpoint="http://u:p@h/">x</ask>', "credentials")

    def test_endpoint_without_path(self):
        self.assertEqual(Endpoint("http://h:8080").path_with_query, "/")
        self.assertEqual(Endpoint("http://h").port, 80)


class ConversationTest(unittest.TestCase):
    def test_round_trip(self):
        messages = [{"role": "user", "content": "héllo <&>"}, {"role": "assistant", "content": "hi"}]
        self.assertEqual(load_conversation(dump_conversation(messages)), messages)

    def test_nothing_or_garbage_is_empty(self):
        self.assertEqual(load_conversation(None), [])
        self.assertEqual(load_conversation(b"\xff\xfe"), [])
        self.assertEqual(load_conversation(b"{not json"), [])
        self.assertEqual(load_conversation(b'{"role": "user"}'), [])
        self.assertEqual(
            load_conversation(b'[{"role": "user", "content": "a"}, 3, {"role": 1, "content": "b"}]'),
            [{"role": "user", "content": "a"}],
        )

    def test_only_the_last_messages_are_kept(self):
        messages = [{"role": "user", "content": str(n)} for n in range(MAX_MESSAGES + 10)]
        kept = load_conversation(dump_conversation(messages))
        self.assertEqual(len(kept), MAX_MESSAGES)
        self.assertEqual(kept[-1]["content"], str(MAX_MESSAGES + 9))

    def test_request(self):
        messages = [{"role": "user", "content": "x"}]
        body = request_body("m", messages)
        self.assertEqual(json.loads(body), {"model": "m", "messages": messages, "stream": True})
        headers = dict(request_headers(body))
        self.assertEqual(headers["content-length"], str(len(body)).encode())
        self.assertEqual(headers["accept"], b"text/event-stream")
        self.assertNotIn("authorization", headers)


class SseParserTest(unittest.TestCase):
    STREAM = (
        b": a comment\n"
        b"event: message\n"
        b"data: one\n\n"
        b"data: two\r\n"
        b"data:  three\r\n\r\n"
        b"id: 7\r"
        b"data: four\r\r"
        b"data: [DONE]\n\n"
    )
    EVENTS = ["one", "two\n three", "four", "[DONE]"]

    def test_whole(self):
        parser = SseParser()
        self.assertEqual(parser.feed(self.STREAM) + parser.finish(), self.EVENTS)

    def test_byte_by_byte(self):
        parser = SseParser()
        events = []
        for index in range(len(self.STREAM)):
            events += parser.feed(self.STREAM[index : index + 1])
        self.assertEqual(events + parser.finish(), self.EVENTS)

    def test_every_split(self):
        for cut in range(len(self.STREAM) + 1):
            parser = SseParser()
            events = parser.feed(self.STREAM[:cut]) + parser.feed(self.STREAM[cut:])
            self.assertEqual(events + parser.finish(), self.EVENTS, cut)

    def test_utf8_split_inside_a_character(self):
        data = "data: café ☕\n\n".encode()
        parser = SseParser()
        events = []
        for index in range(len(data)):
            events += parser.feed(data[index : index + 1])
        self.assertEqual(events, ["café ☕"])

    def test_an_event_left_open_at_the_end(self):
        parser = SseParser()
        self.assertEqual(parser.feed(b"data: last"), [])
        self.assertEqual(parser.finish(), ["last"])
        self.assertEqual(SseParser().finish(), [])


class CompletionStreamTest(unittest.TestCase):
    def test_deltas(self):
        stream = CompletionStream()
        role = json.dumps({"choices": [{"delta": {"role": "assistant", "content": ""}}]})
        stop = json.dumps({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        usage = json.dumps({"choices": [], "usage": {"total_tokens": 3}})
        data = sse(role, delta("Hel"), delta("lo"), stop, usage, "[DONE]", delta("ignored"))
        self.assertEqual(stream.feed(data[:40]), [])
        self.assertEqual(stream.feed(data[40:]), ["Hel", "lo"])
        self.assertTrue(stream.done)
        self.assertEqual(stream.finish(), [])
        self.assertEqual(stream.text, "Hello")
        self.assertEqual(stream.finish_reason, "stop")

    def test_end_without_done(self):
        stream = CompletionStream()
        self.assertEqual(stream.feed(sse(delta("a")) + b"data: " + delta("b").encode()), ["a"])
        self.assertEqual(stream.finish(), ["b"])
        self.assertEqual(stream.text, "ab")

    def test_errors(self):
        with self.assertRaises(ProviderError) as caught:
            CompletionStream().feed(sse('{"error": {"message": "rate limited"}}'))
        self.assertEqual((caught.exception.code, caught.exception.message), ("provider", "rate limited"))
        with self.assertRaises(ProviderError) as caught:
            CompletionStream().feed(sse("not json"))
        self.assertEqual(caught.exception.code, "bad-response")
        stream = CompletionStream()
        stream.feed(b"hello, this is not SSE\n")
        with self.assertRaises(ProviderError) as caught:
            stream.finish()
        self.assertEqual(caught.exception.code, "bad-response")

    def test_json_completion(self):
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "hi"}}]})
        self.assertEqual(completion_text(body.encode()), "hi")
        for bad in [b"", b"[]", b'{"choices": []}', b'{"choices": [{"message": {"content": 3}}]}']:
            with self.assertRaises(ProviderError) as caught:
                completion_text(bad)
            self.assertEqual(caught.exception.code, "bad-response")


class ErrorsTest(unittest.TestCase):
    def test_status(self):
        error = status_error(401, b'{"error": {"message": "Incorrect API key provided.", "type": "x"}}')
        self.assertEqual(error.code, "http-status")
        self.assertEqual(error.status, 401)
        self.assertEqual(error.message, "the provider answered HTTP 401: Incorrect API key provided.")
        self.assertEqual(status_error(502, b"<html>Bad\n gateway</html>").message,
                         "the provider answered HTTP 502: <html>Bad gateway</html>")
        self.assertEqual(status_error(500, b"").message, "the provider answered HTTP 500")
        self.assertLess(len(status_error(500, b"x" * 10000).message), 400)

    def test_wit_case_name(self):
        self.assertEqual(wit_case_name("ErrorCode_HttpRequestDenied"), "http-request-denied")
        self.assertEqual(wit_case_name("ErrorCode_ConnectionRefused"), "connection-refused")
        self.assertEqual(wit_case_name("ErrorCode_DnsError"), "dns-error")
        self.assertEqual(wit_case_name("Error_NoSuchStore"), "no-such-store")

    def test_transport(self):
        endpoint = Endpoint("http://127.0.0.1:9/v1/chat/completions")
        error = transport_error("connection-refused", endpoint)
        self.assertEqual(error.code, "connection-refused")
        self.assertEqual(
            error.message,
            "nothing accepts connections at http://127.0.0.1:9 (wasi:http error-code connection-refused)",
        )
        error = transport_error("http-request-denied", endpoint)
        self.assertEqual(error.code, "denied")
        self.assertIn("granted", error.message)
        self.assertEqual(transport_error("dns-error", endpoint, "NXDOMAIN").code, "unreachable")
        self.assertIn("NXDOMAIN", transport_error("dns-error", endpoint, "NXDOMAIN").message)
        self.assertEqual(transport_error("http-protocol-error", endpoint).code, "transport")


# -- the agent with fakes -------------------------------------------------------


class FakeBucket:
    def __init__(self):
        self.values = {}
        self.fail_set = False

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value):
        if self.fail_set:
            raise AgentError("internal", "quota exceeded")
        self.values[key] = bytes(value)


class FakeResponse:
    def __init__(self, status, content_type, chunks, fail_after=None):
        self.status = status
        self.content_type = content_type
        self._chunks = chunks
        self._fail_after = fail_after
        self.closed = False

    def chunks(self):
        for index, chunk in enumerate(self._chunks):
            if self._fail_after is not None and index == self._fail_after:
                raise transport_error("connection-terminated", None)
            yield chunk

    def close(self):
        self.closed = True


class AgentTest(unittest.TestCase):
    def setUp(self):
        self.bucket = FakeBucket()
        self.buckets = []
        self.emitted = []
        self.sent = []
        self.responses = []
        self.logged = []

        def open_bucket(name):
            self.buckets.append(name)
            return self.bucket

        def send(endpoint, headers, body):
            self.sent.append((endpoint, dict(headers), json.loads(body)))
            response = self.responses.pop(0)
            if isinstance(response, Exception):
                raise response
            self.last_response = response
            return response

        self.agent = Llm(open_bucket, send, self.emitted.append,
                         lambda level, message: self.logged.append((level, message)))

    def stream_response(self, *pieces, chunking=None):
        data = sse(*[delta(piece) for piece in pieces], "[DONE]")
        chunks = chunking(data) if chunking else [data]
        return FakeResponse(200, "text/event-stream; charset=utf-8", chunks)

    def test_a_conversation(self):
        self.responses.append(self.stream_response("Hi ", "there", chunking=lambda d: [d[:30], d[30:]]))
        self.assertEqual(self.agent.handle("ask", "<ask>hello</ask>"), ["<answer>Hi there</answer>"])
        self.assertEqual(self.buckets, ["session"])
        self.assertTrue(self.last_response.closed)
        endpoint, headers, body = self.sent[0]
        self.assertEqual(endpoint.url, DEFAULT_ENDPOINT)
        self.assertEqual(body, {"model": "mock", "stream": True,
                                "messages": [{"role": "user", "content": "hello"}]})
        self.assertNotIn("authorization", headers)
        self.assertEqual("".join(ElementTree.fromstring(p).text for p in self.emitted), "Hi there")
        self.assertTrue(all(p.startswith("<partial>") for p in self.emitted))

        self.responses.append(self.stream_response("a < b"))
        self.assertEqual(
            self.agent.handle("ask", '<ask model="other" endpoint="https://x.test/c">and?</ask>'),
            ["<answer>a &lt; b</answer>"],
        )
        endpoint, _, body = self.sent[1]
        self.assertEqual(endpoint.url, "https://x.test/c")
        self.assertEqual(body["model"], "other")
        self.assertEqual(body["messages"], [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "Hi there"},
            {"role": "user", "content": "and?"},
        ])
        self.assertEqual(len(load_conversation(self.bucket.values["conversation"])), 4)

    def test_one_partial_per_read(self):
        self.responses.append(self.stream_response(
            "a", "b", "c", "d", chunking=lambda d: [d[:len(d) // 2], d[len(d) // 2:]]))
        self.agent.handle("ask", "<ask>q</ask>")
        self.assertEqual(len(self.emitted), 2)
        self.assertEqual("".join(ElementTree.fromstring(p).text for p in self.emitted), "abcd")

    def test_partials_are_capped(self):
        partials = Partials(self.emitted.append, limit=2)
        for text in ["a", "", "b", "c"]:
            partials.push(text)
        self.assertEqual(self.emitted, ["<partial>a</partial>", "<partial>b</partial>"])
        self.assertEqual(partials.count, 2)

    def test_a_json_answer_is_taken(self):
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "plain"}}]})
        self.responses.append(FakeResponse(200, "application/json", [body.encode()]))
        self.assertEqual(self.agent.handle("ask", "<ask>q</ask>"), ["<answer>plain</answer>"])
        self.assertEqual(self.emitted, [])

    def assert_error_answer(self, response, code, *parts):
        before = dict(self.bucket.values)
        self.responses.append(response)
        [answer] = self.agent.handle("ask", "<ask>q</ask>")
        root = ElementTree.fromstring(answer)
        self.assertEqual(root.tag, "answer")
        self.assertEqual(root.get("error"), code)
        for part in parts:
            self.assertIn(part, root.text)
        self.assertEqual(self.bucket.values, before, "the conversation must not change")
        return root

    def test_errors_are_answers(self):
        root = self.assert_error_answer(
            FakeResponse(401, "application/json", [b'{"error": {"message": "Incorrect API key"}}']),
            "http-status", "HTTP 401", "Incorrect API key")
        self.assertEqual(root.get("status"), "401")
        self.assert_error_answer(
            transport_error("connection-refused", Endpoint(DEFAULT_ENDPOINT)),
            "connection-refused", "127.0.0.1:18080")
        self.assert_error_answer(
            transport_error("http-request-denied", Endpoint(DEFAULT_ENDPOINT)), "denied")
        self.assert_error_answer(
            FakeResponse(200, "text/html", [b"<html/>"]), "bad-response", "text/html")
        self.assert_error_answer(
            FakeResponse(200, "text/event-stream", [sse(delta("x")), b"more"], fail_after=1),
            "transport", "connection-terminated")
        self.assertIn("warn", [level for level, _ in self.logged])

    def test_a_failed_save_keeps_the_answer(self):
        self.bucket.fail_set = True
        self.responses.append(self.stream_response("ok"))
        self.assertEqual(self.agent.handle("ask", "<ask>q</ask>"), ["<answer>ok</answer>"])
        self.assertTrue(any("not saved" in message for _, message in self.logged))

    def test_failures(self):
        with self.assertRaises(AgentError) as caught:
            self.agent.handle("other", "<other/>")
        self.assertEqual(caught.exception.kind, "malformed")
        with self.assertRaises(AgentError) as caught:
            self.agent.handle("ask", "<ask></ask>")
        self.assertEqual(caught.exception.kind, "malformed")
        self.assertEqual(self.sent, [])


# -- the agent against the mock server -------------------------------------------


class HttpClientResponse:
    def __init__(self, connection, response):
        self._connection = connection
        self._response = response
        self.status = response.status
        self.content_type = response.getheader("Content-Type", "")

    def chunks(self):
        while True:
            data = self._response.read1(16384)
            if not data:
                return
            yield data

    def close(self):
        self._connection.close()


def http_client_send(endpoint, headers, body):
    """``Llm``'s ``send`` over ``http.client``, for native tests."""
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=10)
    try:
        connection.request("POST", endpoint.path_with_query, body=body,
                           headers={name: value.decode() for name, value in headers})
        return HttpClientResponse(connection, connection.getresponse())
    except ConnectionRefusedError:
        connection.close()
        raise transport_error("connection-refused", endpoint)


class MockServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, os.path.abspath(MOCK_DIR))
        try:
            import server as mock
        finally:
            sys.path.pop(0)
        cls.log = open(os.devnull, "w")
        cls.server = mock.make_server("127.0.0.1", 0, delay_ms=20, log=cls.log)
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        cls.endpoint = f"{cls.server.url}/v1/chat/completions"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.thread.join(5)
        cls.log.close()

    def test_a_streamed_conversation(self):
        bucket = FakeBucket()
        emitted = []
        agent = Llm(lambda name: bucket, http_client_send, emitted.append)
        ask = f'<ask endpoint="{self.endpoint}">'
        self.assertEqual(
            agent.handle("ask", ask + "first question</ask>"),
            ["<answer>You said: first question. (mock model, 1 messages in the conversation)</answer>"],
        )
        self.assertGreater(len(emitted), 3, "a delayed stream arrives in several partials")
        self.assertEqual(
            "".join(ElementTree.fromstring(p).text for p in emitted),
            "You said: first question. (mock model, 1 messages in the conversation)",
        )
        self.assertEqual(
            agent.handle("ask", ask + "second &amp; &lt;last&gt;</ask>"),
            ["<answer>You said: second &amp; &lt;last&gt;. "
             "(mock model, 3 messages in the conversation)</answer>"],
        )
        [_, second] = [r for r in self.server.state.snapshot() if r["method"] == "POST"][-2:]
        self.assertEqual([m["role"] for m in second["body"]["messages"]], ["user", "assistant", "user"])
        self.assertIsNone(second["authorization"])

    def test_nothing_listening(self):
        agent = Llm(lambda name: FakeBucket(), http_client_send, lambda payload: None)
        [answer] = agent.handle("ask", '<ask endpoint="http://127.0.0.1:9/v1/chat/completions">x</ask>')
        self.assertTrue(re.match(r'<answer error="connection-refused">', answer), answer)


if __name__ == "__main__":
    unittest.main()
