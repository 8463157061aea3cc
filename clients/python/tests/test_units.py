"""Offline tests of the client's parts: reading frames, typing errors, the
rate limiter and the TOTP step bookkeeping. No server needed::

    PYTHONPATH=clients/python python3 -m unittest discover -s clients/python/tests -p test_units.py
"""

from __future__ import annotations

import unittest

from agentserver_client import (
    ERROR_CLASSES,
    AccessDenied,
    AgentFailed,
    AgentServerError,
    Answer,
    BadFrame,
    Busy,
    Envelope,
    FramesDropped,
    Malformed,
    NoListener,
    PrivilegedResult,
    RateLimit,
    ShuttingDown,
    StorageUnavailable,
    ThreadLimit,
    TotpSteps,
    UnknownThread,
    element,
    error_from_frame,
    escape,
    parse_catalog,
)
from agentserver_client.limits import _Limiter


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Envelopes(unittest.TestCase):
    def test_a_canonical_envelope_is_read_without_a_parser(self) -> None:
        frame = (
            "<message><meta><from>calc</from><thread>6f1c-2</thread>"
            "<huh>escaped a bare &amp;</huh><huh>closed &lt;b&gt;</huh></meta>"
            '<result unit="m">14 &amp; more</result></message>'
        )
        envelope = Envelope.parse(frame)
        self.assertEqual(envelope.sender, "calc")
        self.assertEqual(envelope.thread, "6f1c-2")
        self.assertEqual(envelope.huh, ("escaped a bare &", "closed <b>"))
        self.assertEqual(envelope.payload, '<result unit="m">14 &amp; more</result>')
        self.assertEqual(envelope.tag, "result")
        self.assertEqual(envelope.text, "14 & more")
        self.assertEqual(envelope.get("unit"), "m")
        self.assertFalse(envelope.resumed)

    def test_a_non_canonical_envelope_is_read_by_the_parser(self) -> None:
        frame = "<message>\n <meta><thread>t1</thread><from>echo</from></meta>\n <echoed>hi</echoed>\n</message>"
        envelope = Envelope.parse(frame, resumed=True)
        self.assertEqual((envelope.sender, envelope.thread, envelope.payload), ("echo", "t1", "<echoed>hi</echoed>"))
        self.assertTrue(envelope.resumed)

    def test_an_envelope_without_a_thread_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            Envelope.parse("<message><meta><from>x</from></meta><a></a></message>")
        with self.assertRaises(ValueError):
            Envelope.parse("<catalog></catalog>")

    def test_prefixed_and_empty_payload_tags(self) -> None:
        frame = '<message><meta><from>a</from><thread>t</thread></meta><x:p xmlns:x="urn:x"></x:p></message>'
        envelope = Envelope.parse(frame)
        self.assertEqual(envelope.tag, "x:p")
        self.assertEqual(envelope.element.tag, "{urn:x}p")

    def test_an_answer_is_its_final_frame_after_the_partials(self) -> None:
        def frame(payload: str) -> Envelope:
            return Envelope.parse(f"<message><meta><from>llm</from><thread>t</thread></meta>{payload}</message>")

        answer = Answer("t", (frame("<partial>a</partial>"), frame("<partial>b</partial>"), frame("<answer>ab</answer>")))
        self.assertEqual(answer.text, "ab")
        self.assertEqual(answer.sender, "llm")
        self.assertEqual([p.text for p in answer.partials], ["a", "b"])


class Catalogs(unittest.TestCase):
    def test_the_first_catalog_carries_the_session_and_the_token(self) -> None:
        catalog, token = parse_catalog(
            '<catalog resume-token="abc" session="s1" session-timeout="1800" user="svc">'
            '<capability agent="calc" tag="calculate">Arithmetic &amp; more.</capability>'
            '<capability agent="echo" tag="echo"></capability></catalog>'
        )
        self.assertEqual(token, "abc")
        self.assertEqual((catalog.user, catalog.session, catalog.session_timeout), ("svc", "s1", 1800))
        self.assertIn("calculate", catalog)
        self.assertNotIn("count", catalog)
        self.assertEqual(catalog.tags, frozenset({"calculate", "echo"}))
        self.assertEqual(catalog.agent("calculate"), "calc")
        self.assertEqual(catalog.capabilities[0].description, "Arithmetic & more.")
        self.assertFalse(catalog.resumed)

    def test_a_pushed_catalog_has_no_token(self) -> None:
        catalog, token = parse_catalog('<catalog resumed="true" session="s1" user="svc"></catalog>')
        self.assertIsNone(token)
        self.assertTrue(catalog.resumed)
        self.assertEqual(len(catalog), 0)


class Errors(unittest.TestCase):
    def test_every_server_code_has_its_class(self) -> None:
        cases = {
            '<access-denied tag="secret"></access-denied>': (AccessDenied, None, "secret", None),
            '<error code="no-listener" tag="nobody"></error>': (NoListener, None, "nobody", None),
            '<error code="malformed">a frame must hold exactly one element</error>': (Malformed, None, None, None),
            '<error code="unknown-thread" thread="t9"></error>': (UnknownThread, None, None, "t9"),
            '<error agent="hostile" code="agent-failed" thread="t1">trapped: unreachable</error>': (
                AgentFailed,
                "hostile",
                None,
                "t1",
            ),
            '<error agent="slow" code="busy" thread="t2"></error>': (Busy, "slow", None, "t2"),
            '<error code="thread-limit" thread="t3">too deep</error>': (ThreadLimit, None, None, "t3"),
            '<error code="bad-frame">binary frames are not accepted</error>': (BadFrame, None, None, None),
            '<error code="shutting-down">bye</error>': (ShuttingDown, None, None, None),
            '<error code="storage-unavailable">later</error>': (StorageUnavailable, None, None, None),
        }
        for frame, (cls, agent, tag, thread) in cases.items():
            error = error_from_frame(frame)
            self.assertIs(type(error), cls, frame)
            self.assertIsInstance(error, AgentServerError)
            self.assertEqual((error.agent, error.tag, error.thread), (agent, tag, thread), frame)
            self.assertEqual(error.frame, frame)
        self.assertEqual(len(ERROR_CLASSES), 11)

    def test_frames_dropped_counts_and_unknown_codes_stay_typed(self) -> None:
        dropped = error_from_frame('<error code="frames-dropped" count="7"></error>')
        assert isinstance(dropped, FramesDropped)
        self.assertEqual(dropped.count, 7)
        novel = error_from_frame('<error code="brand-new">later</error>')
        self.assertIs(type(novel), AgentServerError)
        self.assertEqual((novel.code, novel.message), ("brand-new", "later"))
        with self.assertRaises(ValueError):
            error_from_frame("<message/>")

    def test_a_verdict_is_read(self) -> None:
        applied = PrivilegedResult.parse('<privileged-result id="c1" status="applied"></privileged-result>')
        self.assertTrue(applied.applied)
        refused = PrivilegedResult.parse('<privileged-result id="c1" status="refused">id already used</privileged-result>')
        self.assertEqual((refused.applied, refused.reason), (False, "id already used"))


class Building(unittest.TestCase):
    def test_elements_are_escaped(self) -> None:
        self.assertEqual(element("calculate", "2 < 3 & 4"), "<calculate>2 &lt; 3 &amp; 4</calculate>")
        self.assertEqual(element("hold", ms="50"), '<hold ms="50"></hold>')
        self.assertEqual(element("sort", "b a", order='"asc"'), '<sort order="&quot;asc&quot;">b a</sort>')
        self.assertEqual(escape("a>b"), "a&gt;b")


class Limiter(unittest.TestCase):
    def test_a_burst_then_the_sustained_rate(self) -> None:
        clock = FakeClock()
        limiter = _Limiter(RateLimit(messages_per_second=10, burst=5), clock)
        self.assertEqual([limiter.delay(0) for _ in range(5)], [0.0] * 5)
        wait = limiter.delay(0)
        self.assertAlmostEqual(wait, 0.1)
        clock.now += wait
        self.assertEqual(limiter.delay(0), 0.0)
        self.assertGreater(limiter.delay(0), 0.0)
        limiter.reset()
        self.assertEqual(limiter.delay(0), 0.0)

    def test_the_default_stays_below_the_server_default(self) -> None:
        limit = RateLimit()
        self.assertLess(limit.messages_per_second, 50)
        self.assertLess(limit.burst, 100)
        self.assertLess(limit.max_bad_messages, 20)
        self.assertEqual(RateLimit.for_server(1000, 2000), RateLimit(900.0, 1800.0))

    def test_bad_messages_hold_the_next_until_the_oldest_ages_out(self) -> None:
        clock = FakeClock()
        limiter = _Limiter(RateLimit(messages_per_second=1000, burst=1000, max_bad_messages=3, bad_window=10), clock)
        for _ in range(3):
            limiter.record_bad()
            clock.now += 1
        # Three bad within the window: nothing more may go until the first
        # is 10 s old.
        self.assertAlmostEqual(limiter.delay(0), 7.0)
        clock.now += 7.0
        self.assertEqual(limiter.delay(0), 0.0)

    def test_unresolved_messages_and_continuations_count_as_possibly_bad(self) -> None:
        clock = FakeClock()
        limiter = _Limiter(RateLimit(1000, 1000, max_bad_messages=2, verdict_seconds=1.0), clock)
        limiter.record_continuation()
        self.assertGreater(limiter.delay(1), 0.0)
        clock.now += 1.0
        self.assertEqual(limiter.delay(1), 0.0)


class TotpStepBook(unittest.TestCase):
    def test_a_second_login_in_one_step_waits_for_the_next(self) -> None:
        clock = FakeClock(30 * 1000 + 12.0)
        steps = TotpSteps(clock)
        self.assertEqual(steps.reserve("wss://h/", "svc"), (1000, 0.0))
        step, wait = steps.reserve("wss://h/", "svc")
        self.assertEqual(step, 1001)
        self.assertAlmostEqual(wait, 18.0)
        # Another user, or another server, has its own steps.
        self.assertEqual(steps.reserve("wss://h/", "other"), (1000, 0.0))
        self.assertEqual(steps.reserve("wss://g/", "svc"), (1000, 0.0))
        clock.now += 60
        self.assertEqual(steps.reserve("wss://h/", "svc"), (1002, 0.0))
        self.assertEqual(steps.used("wss://h/", "svc"), 1002)


if __name__ == "__main__":
    unittest.main()
