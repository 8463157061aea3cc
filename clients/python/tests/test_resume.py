"""The client after a dropped connection, against the real server over
TLS: it resumes with the token, without a new TOTP code, and gets the
frames the server kept meanwhile, in order; when the session is gone, it
logs in again, in a fresh TOTP time step. ``tests/python_client.rs`` starts
the server (hostile, counter, echo; sessions outlive their socket by 3 s)
and runs this file.
"""

from __future__ import annotations

import asyncio
import time
import unittest

from support import client

from agentserver_client import SessionLost

#: The server's session_timeout in this run.
SESSION_TIMEOUT = 3.0


def drop(c: object) -> None:
    """Cuts the client's socket as a failing network would: no close
    frame, no goodbye."""
    websocket = getattr(c, "websocket")
    websocket.transport.abort()


class Resume(unittest.IsolatedAsyncioTestCase):
    async def test_a_dropped_socket_resumes_with_the_frames_kept_meanwhile(self) -> None:
        # Reconnecting only after 1 s, while both answers are produced.
        async with client("resumer", reconnect_delay=1.0) as c:
            session = c.session_id
            first = await c.ask('<hold ms="10"/>')
            thread = first.thread
            # Two messages on one thread: delivered one after the other,
            # the count once the hold is over.
            await c.send('<hold ms="300"/>', thread=thread)
            await c.send("<count/>", thread=thread)
            await asyncio.sleep(0.1)
            drop(c)
            frames = []
            async for frame in c.thread(thread, until_final=False, timeout=5.0):
                frames.append(frame)
                if len(frames) == 2:
                    break
            self.assertEqual([f.payload for f in frames], ["<held></held>", "<count-is>1</count-is>"])
            self.assertTrue(all(f.resumed for f in frames), frames)
            catalog = await c.wait_for_catalog(lambda catalog: catalog.resumed, timeout=5.0)
            self.assertEqual(catalog.session, session)
            self.assertEqual((c.logins, c.resumes), (1, 1))
            # The session goes on: its thread, and its agent's state.
            again = await c.ask("<count/>", thread=thread)
            self.assertEqual(again.payload, "<count-is>2</count-is>")
            self.assertFalse(again.final.resumed)

    async def test_an_ask_in_flight_is_answered_across_the_drop(self) -> None:
        async with client("in-flight", reconnect_delay=0.8) as c:
            task = asyncio.create_task(c.ask('<hold ms="400"/>'))
            await asyncio.sleep(0.15)
            drop(c)
            answer = await task
            self.assertEqual(answer.payload, "<held></held>")
            self.assertTrue(answer.final.resumed)
            self.assertEqual((c.logins, c.resumes), (1, 1))
            self.assertEqual((await c.ask("<echo>after</echo>")).text, "after")

    async def test_a_lost_session_logs_in_again_in_a_fresh_time_step(self) -> None:
        # Start early in a time step, so that the second login falls in the
        # same one unless the client waits for the next.
        into_step = time.time() % 30
        if into_step > 15:
            await asyncio.sleep(30 - into_step + 0.5)
        # One attempt only: the wait must be right the first time.
        async with client(
            "relogin", reconnect_delay=SESSION_TIMEOUT + 1.5, login_attempts=1
        ) as c:
            step = int(time.time() // 30)
            session = c.session_id
            task = asyncio.create_task(c.ask('<hold ms="200"/>', timeout=90))
            await asyncio.sleep(0.05)
            drop(c)
            # The session expires while the client waits; its question
            # goes with it.
            with self.assertRaises(SessionLost):
                await task
            answer = await c.ask("<echo>new session</echo>", timeout=60)
            self.assertEqual(answer.text, "new session")
            self.assertNotEqual(c.session_id, session)
            self.assertEqual(c.logins, 2)
            self.assertGreater(int(time.time() // 30), step)


if __name__ == "__main__":
    unittest.main()
