"""Parse `mqtt://host:port` / `mqtts://host:port` broker addresses with errors that say the fix."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class BrokerUrlError(ValueError):
    """A broker URL that cannot be used; the message says what to write instead."""


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """`mqtt[s]://host[:port]` -> BrokerUrl(host, port, tls). The port defaults to 1883 / 8883."""
    example = "write it as mqtt://127.0.0.1:1883 (or mqtts://host:8883 for TLS)"
    if not isinstance(url, str) or not url.strip():
        raise BrokerUrlError(f"empty broker URL: {example}")
    text = url.strip()
    if "://" not in text:
        raise BrokerUrlError(f"broker URL {url!r} has no scheme: {example}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BrokerUrlError(
            f"broker URL {url!r} has scheme {parts.scheme!r}; only mqtt:// and mqtts:// are "
            f"supported (websockets are not): {example}"
        )
    if parts.username or parts.password:
        raise BrokerUrlError(
            f"broker URL {url!r} carries credentials; pass the username and password from the "
            "device's credentials file instead, so that they never end up in logs"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerUrlError(f"broker URL {url!r} has a path, query or fragment: {example}")
    host = parts.hostname
    if not host:
        raise BrokerUrlError(f"broker URL {url!r} has no host: {example}")
    try:
        port = parts.port
    except ValueError as exc:  # urllib raises for non-numeric or out-of-range ports
        raise BrokerUrlError(f"broker URL {url!r} has an invalid port ({exc}): {example}") from None
    if port == 0:
        raise BrokerUrlError(f"broker URL {url!r} has port 0; give the broker's real port: {example}")
    return BrokerUrl(host=host, port=port or DEFAULT_PORTS[scheme], tls=scheme == "mqtts")
