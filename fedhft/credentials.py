"""The credentials file contract: what `fedhft server fleet-init` writes for each MQTT user (a
device's ``clients/<id>.json``, the server's ``server.json``) and every side reads to connect.

It is shared vocabulary: the edge reads its own file (``fedhft edge --credentials``) and must not
import the server package, where the fleet-init writer and the broker launchers live
(``server.broker``). Errors are ``FleetConfigError`` (a ``fedhft.config.ConfigError``) naming the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from fedhft.config import ConfigError

SCHEMA_VERSION = 1  # of the credentials files and of the fleet folder's fleet.json


class FleetConfigError(ConfigError):
    """A fleet folder or credentials file that is missing, incomplete or inconsistent; the message says the fix."""


@dataclass(frozen=True)
class Credentials:
    """What one MQTT user (a device or the server) needs to connect. Paths are absolute once loaded."""

    client_id: str
    username: str
    password: str = field(repr=False)
    fleet: str
    role: Literal["device", "server"]
    broker_url: str | None  # None: the port is chosen when the broker starts (use broker.url)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # The broker's packet limit, so that a device chunks below it even on MQTT 3.1.1 (on MQTT 5
    # the CONNACK's Maximum Packet Size says the same); paho never checks it itself.
    max_packet_size: int | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self, relative_to: Path) -> str:
        d = asdict(self)
        for key in ("tls_ca", "tls_cert", "tls_key"):
            if d[key] is not None:
                d[key] = os.path.relpath(d[key], relative_to)
        return json.dumps(d, indent=2) + "\n"


def read_fleet_json(path: Path, what: str) -> dict:
    """A fleet-init JSON file (credentials or fleet.json) of this ``SCHEMA_VERSION``, as a dict."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetConfigError(
            f"{what} {path} is missing: the fleet folder is incomplete; recreate it with "
            "`fedhft server fleet-init --out DIR` (or server.broker.fleet_init)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise FleetConfigError(f"cannot read {what} {path}: {exc}; recreate the fleet folder") from None
    if not isinstance(data, dict):
        raise FleetConfigError(f"{what} {path} is not a JSON object; recreate the fleet folder")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise FleetConfigError(
            f"{what} {path} has schema_version {version!r}, this fedhft reads {SCHEMA_VERSION}: "
            "recreate the fleet with this version's fleet-init"
        )
    return data


def load_credentials(path: str | Path) -> Credentials:
    """Read one `clients/<id>.json` or `server.json`; relative TLS paths resolve against its folder."""
    path = Path(path).resolve()
    data = read_fleet_json(path, "credentials file")
    names = {f for f in Credentials.__dataclass_fields__}
    unknown, missing = set(data) - names, {"client_id", "username", "password", "fleet", "role"} - set(data)
    if unknown or missing:
        raise FleetConfigError(
            f"credentials file {path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
            "recreate it with fleet-init"
        )
    for key in ("tls_ca", "tls_cert", "tls_key"):
        if data.get(key) is not None:
            data[key] = str((path.parent / data[key]).resolve())
    return Credentials(**data)


__all__ = ["SCHEMA_VERSION", "Credentials", "FleetConfigError", "load_credentials", "read_fleet_json"]
