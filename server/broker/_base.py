"""What every broker launcher offers, and the port helpers they share."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from server.broker._fleet_init import FleetConfig, load_fleet


class BrokerStartError(RuntimeError):
    """A broker that did not come up; the message carries the reason and, for Mosquitto, its log tail."""


@runtime_checkable
class Broker(Protocol):
    """A running (or stoppable) MQTT broker for one fleet."""

    kind: str  # "mosquitto" | "embedded"
    mqtt5: bool  # False for amqtt: clients must speak MQTT 3.1.1

    port: int | None  # None until started when no port was fixed

    @property
    def url(self) -> str: ...
    def start(self) -> "Broker": ...
    def stop(self) -> None: ...
    def restart(self) -> "Broker": ...  # same port; only Mosquitto keeps sessions across it
    def __enter__(self) -> "Broker": ...
    def __exit__(self, *exc) -> None: ...


def as_fleet(config: FleetConfig | str | Path) -> FleetConfig:
    return config if isinstance(config, FleetConfig) else load_fleet(config)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago. Binding port 0 is the only portable way to get one;
    another process may still take it before the broker binds, so launchers retry on that."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Can a listener bind `host:port` now? Checked before launch because a readiness probe
    cannot tell our broker from another process already listening on that port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as brokers do: TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(host: str, ports: dict[str, int | None]) -> None:
    """Raise BrokerStartError naming the first busy port and the fix."""
    for name, port in ports.items():
        if port is not None and not port_is_free(host, port):
            raise BrokerStartError(
                f"{name} {port} on {host} is already in use by another process: pass another "
                f"{name}, or {name}=None to pick a free one (never the system broker's 1883)"
            )


def connect_host(host: str) -> str:
    """The address a local client dials for a listener bound to `host` (a wildcard is not dialable)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def accepts_tcp(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((connect_host(host), port), timeout=timeout):
            return True
    except OSError:
        return False


def url_for(host: str, port: int, tls: bool = False) -> str:
    shown = connect_host(host)
    shown = f"[{shown}]" if ":" in shown else shown
    return f"{'mqtts' if tls else 'mqtt'}://{shown}:{port}"


def sleep_until(deadline: float, step: float = 0.02) -> bool:
    """Sleep one step; False once the deadline has passed (lets wait loops read as `while`)."""
    if time.monotonic() >= deadline:
        return False
    time.sleep(step)
    return True
