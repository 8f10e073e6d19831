"""A Python plugin that exhausts its memory on demand, to show that the
host contains a Python plugin's faults like any other's.

Configuration: `{"allocate_on": "<word>"}`. `init` registers
`check-event-for-spam`, which, for a message whose body contains the word,
keeps allocating 1 MiB buffers (each written to) until the memory cap stops
it; any other event is `not-spam`. Built by tests/tests/plugin_languages.rs
with componentize-py against the world `spam-checker-plugin`.
"""

import json

from componentize_py_types import Err
from wit_world.imports.types import Callback, Event, SpamVerdict, SpamVerdict_NotSpam

TRIGGER = ""


class Lifecycle:
    def init(self, config: str) -> list[Callback]:
        global TRIGGER
        TRIGGER = json.loads(config).get("allocate_on", "")
        if not TRIGGER:
            raise Err("`allocate_on` is required")
        return [Callback.CHECK_EVENT_FOR_SPAM]


# Only the registered callback is ever called, so the other spam-checker
# functions are left out.
class SpamChecker:
    def check_event_for_spam(self, event: Event) -> SpamVerdict:
        if TRIGGER in json.loads(event.content).get("body", ""):
            hoard = []
            while True:
                hoard.append(bytearray(b"x" * (1 << 20)))
        return SpamVerdict_NotSpam()
