"""The fleet's names and ACL file for the brokers, from `fedhft.protocol`.

The topic tree, the Mosquitto ACL lines and the rule check are protocol facts owned by
`fedhft.protocol` (`Topics`, `acl_lines`, `valid_id`, `is_allowed`); this module only adapts them:
`check_name` re-raises a bad name as the broker's `FleetNameError`, and `mosquitto_acl()` renders the
lines as Mosquitto's `acl_file`. `fedhft.protocol` is imported lazily (numpy/safetensors, ~0.5 s).
"""

from __future__ import annotations


class FleetNameError(ValueError):
    """A fleet, device or server name that cannot be used as a topic level or broker username."""


def check_name(kind: str, name: str) -> str:
    """Return `name` if `fedhft.protocol` accepts it as an id, else raise FleetNameError."""
    from fedhft.protocol import valid_id

    try:
        return valid_id(name, kind)
    except ValueError as exc:  # protocol's TopicError; re-raised as the broker's own type
        raise FleetNameError(f"invalid {kind} name: {exc}") from None


def fleet_prefix(fleet: str) -> str:
    """`fedhft/v1/<fleet>`: every fleet topic lives below it."""
    from fedhft.protocol import Topics

    check_name("fleet", fleet)
    return Topics(fleet).base


def mosquitto_acl(fleet: str, server_user: str) -> str:
    """The Mosquitto 2 `acl_file` text for a fleet."""
    from fedhft.protocol import acl_lines

    check_name("fleet", fleet)
    check_name("server user", server_user)
    return "\n".join(acl_lines(fleet, server_user)) + "\n"
