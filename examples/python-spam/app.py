"""A Myelin spam checker in Python, built with componentize-py.

Configuration (the `config:` of its `modules:` entry):

    banned_words: [viagra, "free crypto"]   # messages containing one are refused
    blocked_invitees: ["@spam*:example.org"] # invites to these users are refused

Words match case-insensitively anywhere in an `m.room.message` body;
user IDs match exactly, `*` standing for any run of characters.

Build (from the repository root):

    componentize-py -d wit -w spam-checker-plugin componentize \
        -p examples/python-spam app -o python_spam.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Callback,
    Event,
    LogLevel,
    RegistrationVerdict,
    RegistrationVerdict_Allow,
    Rejection,
    SpamVerdict,
    SpamVerdict_NotSpam,
    SpamVerdict_Reject,
    UserProfile,
)

# Set by `init`. Each instance has its own memory and gets its own `init`,
# so module globals are the plugin's configuration.
BANNED_WORDS: list[str] = []
BLOCKED_INVITEES: list[str] = []


def string_list(config: dict, key: str) -> list[str]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        # An `Err` raised from a function returning `result<_, string>` is
        # its `err` case: here the server refuses to start and shows it.
        raise Err(f"`{key}` must be a list of strings")
    return value


def matches(pattern: str, value: str) -> bool:
    """Whether `value` matches `pattern`, where `*` is any run of characters."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return value == pattern
    if not value.startswith(parts[0]) or not value.endswith(parts[-1]):
        return False
    position, end = len(parts[0]), len(value) - len(parts[-1])
    for part in parts[1:-1]:
        found = value.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return position <= end


def reject(message: str) -> SpamVerdict:
    return SpamVerdict_Reject(Rejection(errcode="M_FORBIDDEN", message=message))


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> list[Callback]:
        global BANNED_WORDS, BLOCKED_INVITEES
        try:
            parsed = json.loads(config)
        except ValueError as err:
            raise Err(f"the configuration is not JSON: {err}")
        if not isinstance(parsed, dict):
            raise Err("the configuration must be a mapping")
        BANNED_WORDS = [w.lower() for w in string_list(parsed, "banned_words")]
        BLOCKED_INVITEES = string_list(parsed, "blocked_invitees")
        return [Callback.CHECK_EVENT_FOR_SPAM, Callback.USER_MAY_INVITE]


class SpamChecker(exports.SpamChecker):
    def check_event_for_spam(self, event: Event) -> SpamVerdict:
        if event.event_type != "m.room.message":
            return SpamVerdict_NotSpam()
        body = json.loads(event.content).get("body")
        if not isinstance(body, str):
            return SpamVerdict_NotSpam()
        lowered = body.lower()
        for word in BANNED_WORDS:
            if word in lowered:
                host.log(LogLevel.INFO, f"refused {event.event_id} from {event.sender}: {word!r}")
                return reject(f"messages may not contain {word!r}")
        return SpamVerdict_NotSpam()

    def user_may_invite(self, inviter: str, invitee: str, room_id: str) -> SpamVerdict:
        if any(matches(pattern, invitee) for pattern in BLOCKED_INVITEES):
            host.log(LogLevel.INFO, f"refused {inviter}'s invite of {invitee}")
            return reject(f"{invitee} may not be invited")
        return SpamVerdict_NotSpam()

    # The world has every spam-checker callback; `init` registered only the
    # two above, so the host never calls these.
    def user_may_join_room(self, user_id: str, room_id: str, is_invited: bool) -> SpamVerdict:
        return SpamVerdict_NotSpam()

    def user_may_send_threepid_invite(
        self, inviter: str, medium: str, address: str, room_id: str
    ) -> SpamVerdict:
        return SpamVerdict_NotSpam()

    def user_may_create_room(self, user_id: str, request: str) -> SpamVerdict:
        return SpamVerdict_NotSpam()

    def user_may_create_room_alias(self, user_id: str, room_alias: str) -> SpamVerdict:
        return SpamVerdict_NotSpam()

    def user_may_publish_room(self, user_id: str, room_id: str) -> SpamVerdict:
        return SpamVerdict_NotSpam()

    def check_username_for_spam(self, profile: UserProfile) -> bool:
        return False

    def check_registration_for_spam(
        self,
        email: str | None,
        username: str | None,
        request_info: list[tuple[str, str]],
        auth_provider_id: str | None,
    ) -> RegistrationVerdict:
        return RegistrationVerdict_Allow()

    def check_media_file_for_spam(
        self, prefix: bytes, content_type: str | None, length: int
    ) -> SpamVerdict:
        return SpamVerdict_NotSpam()

    def should_drop_federated_event(self, event: Event) -> bool:
        return False
