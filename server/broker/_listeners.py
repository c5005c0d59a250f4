"""The listener ports both broker launchers share: fixed or free ports, the start loop that picks
them again when another process takes one first, the urls, and keeping them for restart()."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from server.broker._base import BrokerStartError, as_fleet, check_ports_free, free_port, url_for
from server.broker._fleet_init import FleetConfig

_PORT_RETRIES = 3


class ListenerPorts:
    """Mixin of MosquittoBroker and EmbeddedBroker. A subclass calls ``_init_ports`` in its
    ``__init__``, implements ``_launch`` (start on ``self.port``/``self.tls_port`` or raise
    BrokerStartError) and ``stop``, and sets ``_port_taken`` to the text of its launch error
    that means "a port is already in use"."""

    _port_taken = "in use"

    def _init_ports(
        self, config: FleetConfig | str | Path, port: int | None, host: str | None, tls_port: int | None
    ) -> None:
        self.config = as_fleet(config)
        self.host = host or self.config.host
        self._fixed_port = port or self.config.port
        self._fixed_tls_port = tls_port or self.config.tls_port
        self.port: int | None = self._fixed_port
        self.tls_port: int | None = self._fixed_tls_port if self.config.tls else None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the broker has no port yet: call start() first")
        return url_for(self.host, self.port)

    @property
    def tls_url(self) -> str | None:
        return url_for(self.host, self.tls_port, tls=True) if self.tls_port else None

    def _launch_on_ports(self) -> None:
        """Refuse fixed ports that are busy, then launch; a port picked by us can be taken before
        the broker binds it, so on that error pick again (at most ``_PORT_RETRIES`` launches)."""
        check_ports_free(
            self.host, {"port": self._fixed_port, "tls_port": self._fixed_tls_port if self.config.tls else None}
        )
        for attempt in range(_PORT_RETRIES):
            self._pick_ports()
            try:
                self._launch()
                return
            except BrokerStartError as exc:
                auto = self._fixed_port is None or (self.config.tls and self._fixed_tls_port is None)
                if self._port_taken in str(exc) and auto and attempt + 1 < _PORT_RETRIES:
                    self.port, self.tls_port = self._fixed_port, self._fixed_tls_port
                    continue
                raise
        raise AssertionError("unreachable")

    def _pick_ports(self) -> None:
        if self.port is None:
            self.port = free_port(self.host)
        if self.config.tls and self.tls_port is None:
            self.tls_port = free_port(self.host)
            while self.tls_port == self.port:
                self.tls_port = free_port(self.host)

    def _keep_ports(self) -> None:
        """Make the ports of this run the fixed ones, so that restart() comes back on the same urls."""
        self._fixed_port, self._fixed_tls_port = self.port, self.tls_port

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
