"""`fleet_init`: everything a broker, a server and N devices need to talk, written into one folder.

Layout of `out_dir` (secrets are mode 600):

    fleet.json          what was generated (read back by `load_fleet`)
    mosquitto.conf      broker config (listener line only when a port was fixed at init)
    passwd              Mosquitto 2 `$7$` hashes, one line per user          (600)
    acl                 topic ACL (CONTRACTS.md)
    server.json         the server's credentials                               (600)
    clients/<id>.json   one device's credentials                               (600)
    clients/ca.crt, clients/<id>.crt|key   device TLS kit (tls=True only; keys 600)
    tls/ca.crt|key, tls/broker.crt|key, tls/client-<server>.crt|key    (tls=True only)
    data/               broker persistence (QoS 1 sessions); run/: launcher config and log

A device's kit is its `clients/<id>.*` files plus `clients/ca.crt`: paths inside the credentials
files are relative to the file, so the kit can be copied to the device as it is.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedhft.credentials import SCHEMA_VERSION, Credentials, FleetConfigError, load_credentials, read_fleet_json
from fedhft.mqtt import DEFAULT_MAX_PACKET_SIZE, MQTT_MAX_PACKET
from server.broker._acl import check_name, mosquitto_acl
from server.broker._mosquitto_conf import ConfPaths, render_mosquitto_conf
from server.broker._passwd import render_password_file

FLEET_FILE = "fleet.json"


@dataclass(frozen=True)
class FleetConfig:
    """A fleet folder, read back. `devices` keeps fleet-init order."""

    dir: Path
    fleet: str
    server: Credentials
    devices: dict[str, Credentials]
    max_packet_size: int
    host: str
    port: int | None
    tls: bool
    tls_port: int | None

    @property
    def conf_paths(self) -> ConfPaths:
        tls = self.dir / "tls"
        return ConfPaths(
            password_file=self.dir / "passwd",
            acl_file=self.dir / "acl",
            data_dir=self.dir / "data",
            ca_file=tls / "ca.crt" if self.tls else None,
            server_cert=tls / "broker.crt" if self.tls else None,
            server_key=tls / "broker.key" if self.tls else None,
        )

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    def device(self, client_id: str) -> Credentials:
        try:
            return self.devices[client_id]
        except KeyError:
            raise FleetConfigError(
                f"no device {client_id!r} in fleet {self.fleet!r} at {self.dir}; known devices: "
                f"{', '.join(list(self.devices)[:5])}{' ...' if len(self.devices) > 5 else ''}"
            ) from None


def _device_ids(clients: int | list[str], client_prefix: str, server_user: str) -> list[str]:
    if isinstance(clients, bool) or not isinstance(clients, (int, list, tuple)):
        raise FleetConfigError(f"clients must be a count or a list of device ids, got {clients!r}")
    if isinstance(clients, int):
        if clients < 1:
            raise FleetConfigError(f"clients={clients}: a fleet needs at least 1 device")
        width = max(3, len(str(clients - 1)))
        ids = [f"{client_prefix}-{i:0{width}d}" for i in range(clients)]
    else:
        ids = [str(c) for c in clients]
        if not ids:
            raise FleetConfigError("clients=[]: a fleet needs at least 1 device id")
    for cid in ids:
        check_name("device", cid)
    dupes = sorted({c for c in ids if ids.count(c) > 1})
    if dupes:
        raise FleetConfigError(f"duplicate device ids {dupes}: every device needs its own id")
    if server_user in ids:
        raise FleetConfigError(
            f"device id {server_user!r} equals the server user: rename the device or pass "
            "another server_user (the server's ACL grants the whole fleet)"
        )
    return ids


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


def _url(host: str, port: int | None, tls: bool) -> str | None:
    if port is None:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{'mqtts' if tls else 'mqtt'}://{shown}:{port}"


def _check_args(out: Path, max_packet_size: int, port: int | None, tls_port: int | None) -> None:
    if (out / FLEET_FILE).exists():
        raise FleetConfigError(
            f"{out} already holds a fleet ({FLEET_FILE} exists): pass a new --out folder, or "
            "delete the old one first (its passwords would be replaced)"
        )
    if not isinstance(max_packet_size, int) or not 1024 <= max_packet_size <= MQTT_MAX_PACKET:
        raise FleetConfigError(
            f"max_packet_size={max_packet_size!r}: use 1024..268435455 bytes (MQTT's limit); "
            "1048576 (1 MB) matches EMQX's default"
        )
    for name, value in (("port", port), ("tls_port", tls_port)):
        if value is not None and not 1 <= value <= 65535:
            raise FleetConfigError(f"{name}={value}: use 1..65535, or None to pick a free one at launch")
    if port is not None and port == tls_port:
        raise FleetConfigError(f"port and tls_port are both {port}: the two listeners need two ports")


def _make_tls(out: Path, fleet: str, host: str, users: list[str]) -> dict[str, tuple[Path, Path]]:
    """CA, broker certificate, and one client certificate per user (devices in clients/, the
    server user's in tls/: Mosquitto's TLS listener requires one from everybody)."""
    from server.broker._tls import make_ca, make_leaf

    tls_dir = out / "tls"
    tls_dir.mkdir(exist_ok=True)
    ca_crt, ca_key = make_ca(tls_dir, fleet)
    hosts = list(dict.fromkeys([host, "127.0.0.1", "localhost"]))
    make_leaf(ca_crt, ca_key, tls_dir / "broker.crt", tls_dir / "broker.key", host, server_hosts=hosts)
    shutil.copyfile(ca_crt, out / "clients" / "ca.crt")
    pairs = {}
    for i, cid in enumerate(users):
        # Named apart from broker.crt whatever the server user is called.
        crt, key = (
            (tls_dir / f"client-{cid}.crt", tls_dir / f"client-{cid}.key")
            if i == 0
            else (out / "clients" / f"{cid}.crt", out / "clients" / f"{cid}.key")
        )
        make_leaf(ca_crt, ca_key, crt, key, cid)
        pairs[cid] = (crt, key)
    return pairs


def new_password() -> str:
    """A random password (about 190 bits) that never starts with "-": one that did would read as an
    option when passed as `--password VALUE` (argparse refuses it; 1 in 64 generated passwords did)."""
    while True:
        password = secrets.token_urlsafe(24)
        if not password.startswith("-"):
            return password


def _write_credentials(
    out: Path,
    fleet: str,
    server_user: str,
    ids: list[str],
    passwords: dict[str, str],
    certs: dict[str, tuple[Path, Path]],
    max_packet_size: int,
    tls: bool,
    *,
    host: str,
    port: int | None,
    tls_port: int | None,
) -> None:
    """server.json and clients/<id>.json: each user's password, broker url and (tls=True) certificate."""
    server_crt, server_key = certs.get(server_user, (None, None))
    # The server sits next to the broker: it uses the plain loopback listener (its url), and gets
    # a client certificate only for a TLS connection from elsewhere.
    server = Credentials(
        server_user,
        server_user,
        passwords[server_user],
        fleet,
        "server",
        _url(host, port, False),
        str(out / "tls" / "ca.crt") if tls else None,
        str(server_crt) if server_crt else None,
        str(server_key) if server_key else None,
        max_packet_size,
    )
    _write_secret(out / "server.json", server.to_json(out))
    for cid in ids:
        crt, key = certs.get(cid, (None, None))
        cred = Credentials(
            cid,
            cid,
            passwords[cid],
            fleet,
            "device",
            _url(host, tls_port if tls else port, tls),
            str(out / "clients" / "ca.crt") if tls else None,
            str(crt) if crt else None,
            str(key) if key else None,
            max_packet_size,
        )
        _write_secret(out / "clients" / f"{cid}.json", cred.to_json(out / "clients"))


def _write_mosquitto_conf(
    out: Path,
    config: FleetConfig,
    fleet: str,
    max_packet_size: int,
    host: str,
    port: int | None,
    tls_port: int | None,
) -> None:
    conf = render_mosquitto_conf(
        config.conf_paths,
        fleet=fleet,
        max_packet_size=max_packet_size,
        host=host,
        port=port,
        tls_port=tls_port,
    )
    (out / "mosquitto.conf").write_text(conf, encoding="utf-8")


def fleet_init(
    out_dir: str | Path,
    clients: int | list[str],
    fleet: str = "default",
    server_user: str = "server",
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    tls: bool = False,
    port: int | None = None,
    client_prefix: str = "dev",
    *,
    host: str = "127.0.0.1",
    tls_port: int | None = None,
) -> FleetConfig:
    """Write broker config, users, ACL and credentials for a fleet; return it as `load_fleet` would.

    `port`/`tls_port` None: the launcher picks free ports at start, and the credentials files carry
    `broker_url: null` (connect to the running broker's `url` instead).
    """
    out = Path(out_dir).resolve()
    check_name("fleet", fleet)
    check_name("server user", server_user)
    ids = _device_ids(clients, client_prefix, server_user)
    _check_args(out, max_packet_size, port, tls_port)
    for sub in ("clients", "data", "run"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    passwords = {cid: new_password() for cid in [server_user, *ids]}
    certs = _make_tls(out, fleet, host, [server_user, *ids]) if tls else {}
    _write_secret(out / "passwd", render_password_file(passwords))
    (out / "acl").write_text(mosquitto_acl(fleet, server_user), encoding="utf-8")

    _write_credentials(
        out, fleet, server_user, ids, passwords, certs, max_packet_size, tls, host=host, port=port, tls_port=tls_port
    )

    meta = {
        "schema_version": SCHEMA_VERSION,
        "fleet": fleet,
        "server_user": server_user,
        "devices": ids,
        "max_packet_size": max_packet_size,
        "host": host,
        "port": port,
        "tls": tls,
        "tls_port": tls_port,
    }
    (out / FLEET_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    config = load_fleet(out)
    _write_mosquitto_conf(out, config, fleet, max_packet_size, host, port, tls_port if tls else None)
    return config


def load_fleet(fleet_dir: str | Path) -> FleetConfig:
    """Read a folder written by `fleet_init`; raises FleetConfigError naming the problem and the fix."""
    root = Path(fleet_dir).resolve()
    if not root.is_dir():
        raise FleetConfigError(
            f"fleet folder {root} does not exist: create it with `fedhft server fleet-init --out {root}`"
        )
    meta = read_fleet_json(root / FLEET_FILE, "fleet file")
    missing = {"fleet", "devices", "max_packet_size", "host", "port", "tls", "tls_port"} - set(meta)
    if missing:
        raise FleetConfigError(
            f"fleet file {root / FLEET_FILE} lacks {sorted(missing)}: recreate the fleet with fleet-init"
        )
    server = load_credentials(root / "server.json")
    devices = {cid: load_credentials(root / "clients" / f"{cid}.json") for cid in meta["devices"]}
    for cred in [server, *devices.values()]:
        if cred.fleet != meta["fleet"]:
            raise FleetConfigError(
                f"credentials of {cred.client_id!r} are for fleet {cred.fleet!r}, the folder {root} "
                f"is fleet {meta['fleet']!r}: do not mix files from two fleet-init runs"
            )
    for name in ("passwd", "acl"):
        if not (root / name).is_file():
            raise FleetConfigError(f"{root / name} is missing: recreate the fleet folder with fleet-init")
    return FleetConfig(
        dir=root,
        fleet=meta["fleet"],
        server=server,
        devices=devices,
        max_packet_size=int(meta["max_packet_size"]),
        host=meta["host"],
        port=meta["port"],
        tls=bool(meta["tls"]),
        tls_port=meta["tls_port"],
    )
