"""amqtt plugins that give the embedded broker the same users and ACL as the Mosquitto config.

Imported only by the embedded broker (amqtt loads them by dotted path), so that importing
`server.broker` never needs amqtt.
"""

from __future__ import annotations

from dataclasses import dataclass

from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from fedhft.protocol import is_allowed
from server.broker._passwd import read_password_file, verify_password


class PasswdFileAuthPlugin(BaseAuthPlugin):
    """Checks the fleet's Mosquitto `$7$` password file. amqtt's own FileAuthPlugin reads only
    argon2/bcrypt hashes; verifying Mosquitto's format lets one file serve both brokers."""

    @dataclass
    class Config:
        password_file: str = ""

    def __init__(self, context) -> None:
        super().__init__(context)
        self._users = read_password_file(self.config.password_file)

    async def authenticate(self, *, session) -> bool:
        hashed = self._users.get(session.username or "") if session else None
        return bool(hashed) and verify_password(session.password or "", hashed)


class FleetAclPlugin(BaseTopicPlugin):
    """The fleet ACL of CONTRACTS.md, checked on publish, subscribe and delivery."""

    @dataclass
    class Config:
        fleet: str = ""
        server_user: str = ""

    async def topic_filtering(self, *, session=None, topic=None, action=None) -> bool:
        username = session.username if session else None
        return is_allowed(
            self.config.fleet, self.config.server_user, username, topic or "", str(getattr(action, "value", action))
        )
