"""Who may read and write which topic: the fleet ACL (``acl_lines``) read as rules, for the brokers
that cannot take Mosquitto's ``acl_file`` (the embedded amqtt one) and for the AsyncAPI document.

``acl_lines`` is the one statement of the rules; ``is_allowed`` parses the SAME lines the way
Mosquitto 2.0 reads them, so the two brokers and the spec cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from fedhft.protocol._topics import acl_lines

Access = Literal["read", "write", "readwrite"]
ACTIONS = ("publish", "subscribe", "receive")


@dataclass(frozen=True)
class AclRule:
    """One ACL line. `user=None` means a pattern rule for every user (`%u` = username)."""

    user: str | None
    access: Access
    pattern: str  # may contain `%u` when user is None


@lru_cache(maxsize=64)  # the embedded broker asks for every message; the rules never change
def fleet_rules(fleet: str, server_user: str) -> tuple[AclRule, ...]:
    """The fleet's ACL lines as rules, read the way Mosquitto 2.0 reads an acl_file."""
    rules, user = [], None
    for line in acl_lines(fleet, server_user):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
        elif words[0] == "pattern":
            rules.append(AclRule(None, words[1], words[2]))
        elif words[0] == "topic" and user is not None:
            # `topic` lines above the first `user` line are for anonymous clients, which the
            # fleet config never admits, so they grant nothing here either.
            rules.append(AclRule(user, words[1], words[2]))
    return tuple(rules)


def _match(filter_levels: list[str], topic_levels: list[str]) -> bool:
    """MQTT topic-filter match (`+` one level, trailing `#` zero or more levels)."""
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels) or level not in ("+", topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


def _covers(allowed: list[str], requested: list[str]) -> bool:
    """True if every topic matched by filter `requested` is matched by filter `allowed`."""
    for i, level in enumerate(allowed):
        if level == "#":
            return True
        if i >= len(requested):
            return False
        if level == "+":
            if requested[i] == "#":
                return False
            continue
        if requested[i] != level:
            return False
    return len(allowed) == len(requested)


def is_allowed(fleet: str, server_user: str, username: str | None, topic: str, action: str) -> bool:
    """Would the fleet's Mosquitto ACL let `username` do `action` on `topic`?

    `action` is "publish" (a concrete topic), "subscribe" (a filter: allowed only when every topic
    it can match is readable) or "receive" (a concrete topic being delivered).
    """
    if action not in ACTIONS:
        raise ValueError(f"action={action!r}: use 'publish', 'subscribe' or 'receive'")
    if not username or not topic:
        return False
    wanted = "write" if action == "publish" else "read"
    requested = topic.split("/")
    for rule in fleet_rules(fleet, server_user):
        if rule.user is not None and rule.user != username:
            continue
        if rule.access not in (wanted, "readwrite"):
            continue
        allowed = rule.pattern.replace("%u", username).split("/")
        if _covers(allowed, requested) if action == "subscribe" else _match(allowed, requested):
            return True
    return False
