"""The MQTT topic tree of one fleet, and the Mosquitto ACL that confines each device to its own topics.

::

    fedhft/v1/<fleet>/server/status                  retained; the server's Last Will
    fedhft/v1/<fleet>/from/<client>/hello|status|update|outcome|bundle_req
                                                     device -> server; status retained, the device's Last Will
    fedhft/v1/<fleet>/to/<client>/task|ack|bundle    server -> that device only

Ids are validated once here (``[A-Za-z0-9_-]{1,64}``) because a '+', '#' or '/' in an id would
silently widen a subscription or an ACL pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedhft.protocol._errors import MalformedMessage, TopicError
from fedhft.protocol._fields import check_id

ROOT = "fedhft/v1"
#: Kinds a device publishes under ``from/<client>/``.
FROM_CLIENT = ("hello", "status", "update", "outcome", "bundle_req")
#: Kinds the server publishes under ``to/<client>/``.
TO_CLIENT = ("task", "ack", "bundle")
SERVER_STATUS = "server_status"
#: Message type carried by each topic kind (``decode(payload, expect=...)``'s class name).
KIND_MESSAGE = {
    "hello": "hello",
    "status": "client_status",
    "update": "update",
    "outcome": "outcome",
    "bundle_req": "bundle_request",
    "task": "task",
    "ack": "ack",
    "bundle": "bundle_chunk",
    SERVER_STATUS: "server_status",
}


def valid_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid fleet/client id, else raise TopicError saying what is allowed."""
    try:
        return check_id(value, what)
    except MalformedMessage as e:
        raise TopicError(str(e)) from None


@dataclass(frozen=True)
class Topics:
    """All topics of one fleet. ``Topics("demo").update("phone-1")`` -> ``fedhft/v1/demo/from/phone-1/update``."""

    fleet: str

    def __post_init__(self) -> None:
        valid_id(self.fleet, "fleet")

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.fleet}"

    @property
    def server_status(self) -> str:
        return f"{self.base}/server/status"

    def _from(self, client: str, kind: str) -> str:
        return f"{self.base}/from/{valid_id(client, 'client')}/{kind}"

    def _to(self, client: str, kind: str) -> str:
        return f"{self.base}/to/{valid_id(client, 'client')}/{kind}"

    def hello(self, client: str) -> str:
        return self._from(client, "hello")

    def status(self, client: str) -> str:
        return self._from(client, "status")

    def update(self, client: str) -> str:
        return self._from(client, "update")

    def outcome(self, client: str) -> str:
        return self._from(client, "outcome")

    def bundle_req(self, client: str) -> str:
        return self._from(client, "bundle_req")

    def task(self, client: str) -> str:
        return self._to(client, "task")

    def ack(self, client: str) -> str:
        return self._to(client, "ack")

    def bundle(self, client: str) -> str:
        return self._to(client, "bundle")

    # -- subscriptions

    def all_from(self, kind: str) -> str:
        """Server subscription for one kind from every device, e.g. ``fedhft/v1/demo/from/+/update``."""
        if kind not in FROM_CLIENT:
            raise TopicError(f"unknown device topic kind {kind!r}: use one of {list(FROM_CLIENT)}")
        return f"{self.base}/from/+/{kind}"

    def server_subscriptions(self) -> list[str]:
        """Everything the server reads: one wildcard per device-side kind."""
        return [self.all_from(kind) for kind in FROM_CLIENT]

    def client_subscriptions(self, client: str) -> list[str]:
        """Everything a device reads: its own ``to/<client>/#`` and the server status."""
        return [f"{self.base}/to/{valid_id(client, 'client')}/#", self.server_status]

    def shared(self, topic_filter: str, group: str) -> str:
        """MQTT 5 shared subscription (``$share/<group>/<filter>``) to spread intake over workers."""
        return f"$share/{valid_id(group, 'share group')}/{topic_filter}"

    # -- parsing

    def parse(self, topic: str) -> tuple[str, str | None]:
        """``(kind, client)`` of a concrete topic of this fleet; ``("server_status", None)`` for the server.

        Raises TopicError for anything else (another fleet, unknown kind, bad id, wildcards).
        """
        if not isinstance(topic, str):
            raise TopicError(f"topic must be a string, got {type(topic).__name__}")
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            raise TopicError(
                f"topic {topic[:200]!r} is not under {prefix!r}: it belongs to another fleet or application"
            )
        parts = topic[len(prefix) :].split("/")
        if parts == ["server", "status"]:
            return SERVER_STATUS, None
        if len(parts) == 3 and parts[0] in ("from", "to"):
            direction, client, kind = parts
            kinds = FROM_CLIENT if direction == "from" else TO_CLIENT
            if kind in kinds:
                return kind, valid_id(client, "client")
        raise TopicError(
            f"topic {topic[:200]!r} is not a fedhft topic: expected {prefix}server/status, "
            f"{prefix}from/<client>/{{{'|'.join(FROM_CLIENT)}}} or {prefix}to/<client>/{{{'|'.join(TO_CLIENT)}}}"
        )


def acl_lines(fleet: str, server_user: str) -> list[str]:
    """Mosquitto ACL (``acl_file``) for a fleet: devices authenticate with username = client id.

    Mosquitto substitutes ``%u`` with the username, so a device can only write ``from/<itself>/``
    and read ``to/<itself>/``. The server-status read is a ``pattern`` line (not a ``topic`` line
    as CONTRACTS.md sketches) because ``topic`` lines above the first ``user`` line apply to
    ANONYMOUS clients only; a ``pattern`` line applies to every authenticated user.
    """
    base = Topics(fleet).base
    valid_id(server_user, "server user")
    return [
        "# fedhft ACL, generated by fedhft.protocol.acl_lines: devices log in with username = client id",
        f"pattern write {base}/from/%u/#",
        f"pattern read {base}/to/%u/#",
        f"pattern read {base}/server/#",
        "",
        f"user {server_user}",
        f"topic readwrite {base}/#",
    ]


__all__ = ["FROM_CLIENT", "KIND_MESSAGE", "ROOT", "SERVER_STATUS", "TO_CLIENT", "Topics", "acl_lines", "valid_id"]
