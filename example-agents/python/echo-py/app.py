"""The smallest Python agent: answers ``<echoed>`` with the content of what
it is sent. The benchmarks use it to measure what a Python agent costs
(instantiation, a call, memory per instance) apart from any work it does."""

import wit_world
from wit_world.imports.types import Envelope


class WitWorld(wit_world.WitWorld):
    def handle(self, msg: Envelope) -> list[str]:
        payload = msg.payload
        content = payload[payload.index(">") + 1 : payload.rindex("<")]
        return ["<echoed>" + content + "</echoed>"]
