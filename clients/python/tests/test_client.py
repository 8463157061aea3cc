"""The client against the real server over TLS: login and catalog, asking,
the typed errors, a delegation, a stream, continuing a thread, the flood
limits, and a signed command. ``tests/python_client.rs`` starts the server
(echo, calc, delegator, counter, hostile, llm) and runs this file.
"""

from __future__ import annotations

import asyncio
import os
import unittest

from support import COMMANDS, LLM_ENDPOINT, USERS, client

from agentserver_client import (
    AccessDenied,
    AgentFailed,
    AgentServerError,
    AuthenticationFailed,
    Busy,
    Client,
    CommandRefused,
    Flooding,
    NoListener,
    SessionEnded,
    ThreadLimit,
    UnknownThread,
    element,
)


class Basics(unittest.IsolatedAsyncioTestCase):
    async def test_login_gives_the_catalog_of_the_users_tags(self) -> None:
        async with client("login") as c:
            catalog = c.catalog
            self.assertEqual(catalog.user, "login")
            self.assertTrue(c.session_id)
            self.assertEqual(catalog.session_timeout, 1800)
            # Allowed and listened to; `nobody` is allowed but nobody
            # listens, `twin` is not there yet, `secret` is not allowed.
            self.assertEqual(
                catalog.tags,
                {"echo", "calculate", "square-sum", "count", "hold", "trap", "spray", "ask"},
            )
            self.assertEqual(catalog.agent("calculate"), "calc")
            self.assertEqual(c.logins, 1)

    async def test_ask_returns_the_answer_envelope_and_repair_notes(self) -> None:
        async with client("ask") as c:
            answer = await c.ask("<calculate>2 + 3 * 4</calculate>")
            self.assertEqual(answer.payload, "<result>14</result>")
            self.assertEqual((answer.sender, answer.text), ("calc", "14"))
            self.assertTrue(answer.thread)
            self.assertEqual(answer.huh, ())
            repaired = await c.ask("Sure: <echo>fish & chips")
            self.assertEqual(repaired.payload, "<echoed>fish &amp; chips</echoed>")
            self.assertEqual(repaired.text, "fish & chips")
            self.assertIn("escaped a bare &", repaired.huh)
            self.assertNotEqual(repaired.thread, answer.thread)

    async def test_concurrent_asks_on_one_connection_each_get_their_own_answer(self) -> None:
        async with client("concurrent") as c:
            questions = [element("echo", f"question {i}") for i in range(40)]
            answers = await asyncio.gather(*(c.ask(q) for q in questions))
            self.assertEqual([a.text for a in answers], [f"question {i}" for i in range(40)])
            self.assertEqual(len({a.thread for a in answers}), 40)

    async def test_a_delegation_is_answered_by_the_agent_delegated_to(self) -> None:
        async with client("delegation") as c:
            answer = await c.ask("<square-sum><n>3</n><n>4</n></square-sum>")
            self.assertEqual(answer.payload, "<result>25</result>")
            # The delegator only emitted <calculate>; the calculator answered.
            self.assertEqual(answer.sender, "calc")

    async def test_a_thread_is_continued_and_an_unknown_one_refused(self) -> None:
        async with client("continue") as c:
            first = await c.ask("<count/>")
            self.assertEqual(first.payload, "<count-is>1</count-is>")
            second = await c.ask("<count/>", thread=first.thread)
            self.assertEqual((second.thread, second.payload), (first.thread, "<count-is>2</count-is>"))
            thread = await c.send("<count/>", thread=first.thread)
            self.assertEqual(thread, first.thread)
            frames = [frame.payload async for frame in c.thread(first.thread)]
            self.assertEqual(frames, ["<count-is>3</count-is>"])
            with self.assertRaises(UnknownThread) as caught:
                await c.ask("<count/>", thread="no-such-thread")
            self.assertEqual(caught.exception.thread, "no-such-thread")

    async def test_the_session_ends_with_the_block(self) -> None:
        c = client("ending")
        async with c:
            await c.ask("<echo>bye</echo>")
        self.assertFalse(c.connected)
        with self.assertRaises(SessionEnded):
            await c.ask("<echo>again</echo>")

    async def test_a_wrong_secret_fails_authentication(self) -> None:
        name = "wrong-secret"
        self.assertIn(name, USERS)
        other = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        c = Client(os.environ["AGENTSERVER_URL"], name, totp_secret=other, ca=os.environ["AGENTSERVER_CA"], login_attempts=1)
        with self.assertRaises(AuthenticationFailed):
            await c.connect()


class Errors(unittest.IsolatedAsyncioTestCase):
    async def test_access_denied_and_no_listener_leave_the_connection_open(self) -> None:
        async with client("denied") as c:
            with self.assertRaises(AccessDenied) as caught:
                await c.ask("<secret>open sesame</secret>")
            self.assertEqual((caught.exception.code, caught.exception.tag), ("access-denied", "secret"))
            with self.assertRaises(NoListener) as nobody:
                await c.ask("<nobody/>")
            self.assertEqual(nobody.exception.tag, "nobody")
            self.assertEqual((await c.ask("<echo>still here</echo>")).text, "still here")

    async def test_an_agent_failure_names_the_agent(self) -> None:
        async with client("failure") as c:
            with self.assertRaises(AgentFailed) as caught:
                await c.ask("<trap/>")
            error = caught.exception
            self.assertEqual((error.code, error.agent), ("agent-failed", "hostile"))
            self.assertIn("trapped", error.message)
            self.assertTrue(error.thread)
            self.assertIsInstance(error, AgentServerError)

    async def test_a_full_agent_is_busy(self) -> None:
        # hostile runs one call at a time and queues none.
        async with client("busy-a") as a, client("busy-b") as b:
            held = asyncio.create_task(a.ask('<hold ms="800"/>'))
            await asyncio.sleep(0.3)
            with self.assertRaises(Busy) as caught:
                await b.ask('<hold ms="10"/>')
            self.assertEqual(caught.exception.agent, "hostile")
            self.assertEqual((await held).payload, "<held></held>")

    async def test_a_runaway_thread_hits_its_limit(self) -> None:
        async with client("limit") as c:
            # Each <spray/> answers 200 more, all delivered to hostile again.
            with self.assertRaises(ThreadLimit) as caught:
                await c.ask("<spray/>")
            self.assertIn("1024", caught.exception.message)


class Streams(unittest.IsolatedAsyncioTestCase):
    async def test_partials_stream_in_before_the_answer(self) -> None:
        if not LLM_ENDPOINT:
            self.fail("AGENTSERVER_LLM_ENDPOINT is not set")
        question = element("ask", "What is wasm", endpoint=LLM_ENDPOINT)
        async with client("stream") as c:
            frames = [frame async for frame in c.stream(question)]
            self.assertGreater(len(frames), 2, frames)
            *partials, final = frames
            self.assertEqual({frame.tag for frame in partials}, {"partial"})
            self.assertEqual(final.tag, "answer")
            self.assertEqual("".join(frame.text for frame in partials), final.text)
            self.assertEqual({frame.thread for frame in frames}, {final.thread})
            # ask() returns the same shape: the partials, then the answer.
            answer = await c.ask(element("ask", "And components", endpoint=LLM_ENDPOINT))
            self.assertEqual(answer.tag, "answer")
            self.assertTrue(answer.partials)
            self.assertEqual("".join(p.text for p in answer.partials), answer.text)


class FloodLimits(unittest.IsolatedAsyncioTestCase):
    async def test_a_burst_stays_within_the_flood_limit(self) -> None:
        # 150 asks at once, then 150 messages on one thread sent without
        # waiting: far past the server's burst of 100 and 50 a second.
        async with client("burst") as c:
            answers = await asyncio.gather(*(c.ask(element("echo", str(i))) for i in range(150)))
            self.assertEqual([a.text for a in answers], [str(i) for i in range(150)])
            thread = answers[0].thread
            for i in range(150):
                await c.send(element("echo", f"more {i}"), thread=thread)
            texts = []
            async for frame in c.thread(thread, until_final=False, timeout=10):
                texts.append(frame.text)
                if len(texts) == 150:
                    break
            self.assertEqual(texts, [f"more {i}" for i in range(150)])
            self.assertTrue(c.connected)
            self.assertEqual((c.logins, c.resumes), (1, 0))

    async def test_without_the_limiter_the_same_burst_is_cut_off(self) -> None:
        # The control: the server does close a connection that sends so.
        async with client("burst-unlimited", rate_limit=None) as c:
            thread = (await c.ask("<echo>first</echo>")).thread
            with self.assertRaises(Flooding):
                for i in range(150):
                    await c.send(element("echo", f"more {i}"), thread=thread)
                async for _ in c.thread(thread, until_final=False, timeout=10):
                    pass

    async def test_refused_messages_stay_within_the_bad_message_limit(self) -> None:
        # 24 refusals: past the 20 within 10 s the server tolerates.
        async with client("bad") as c:
            for _ in range(24):
                with self.assertRaises(AccessDenied):
                    await c.ask("<secret/>")
            self.assertEqual((await c.ask("<echo>fine</echo>")).text, "fine")
            self.assertEqual(c.resumes, 0)

    async def test_without_the_limiter_refusals_are_cut_off(self) -> None:
        async with client("bad-unlimited", rate_limit=None) as c:
            with self.assertRaises(Flooding):
                for _ in range(24):
                    try:
                        await c.ask("<secret/>")
                    except AccessDenied:
                        pass


class Commands(unittest.IsolatedAsyncioTestCase):
    async def test_a_signed_command_is_applied_once(self) -> None:
        path = os.path.join(COMMANDS, "twin.xml")
        if not os.path.isfile(path):
            self.fail(f"no signed command at {path} (AGENTSERVER_COMMANDS)")
        async with client("owner") as c:
            self.assertNotIn("twin", c.catalog)
            result = await c.apply_file(path)
            self.assertTrue(result.applied)
            self.assertEqual(result.id, "register-twin")
            catalog = await c.wait_for_catalog(lambda catalog: "twin" in catalog)
            self.assertEqual(catalog.agent("twin"), "twin")
            self.assertEqual((await c.ask("<twin>hello</twin>")).payload, "<echoed>hello</echoed>")
            # The id is used: the same command again is refused, and says why.
            with self.assertRaises(CommandRefused) as caught:
                await c.apply_file(path)
            self.assertEqual(caught.exception.command_id, "register-twin")
            self.assertIn("already", caught.exception.message)


if __name__ == "__main__":
    unittest.main()
