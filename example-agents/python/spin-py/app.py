"""A hostile agent for the tests: its handler never returns. Listens to
``spin-py``; proves that fuel and wall-time limits stop a CPython
interpreter stuck in a loop."""

import wit_world
from wit_world.imports.types import Envelope


class WitWorld(wit_world.WitWorld):
    def handle(self, msg: Envelope) -> list[str]:
        while True:
            pass
