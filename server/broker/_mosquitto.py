"""Run a private Mosquitto for one fleet: free loopback port, generated config, stopped by its pid.

Never the system broker: each MosquittoBroker starts its own `mosquitto -c <fleet>/run/mosquitto.conf`
in the foreground (no `-d`, so we own the pid) in its own session (a Ctrl-C aimed at the test
runner does not race our own SIGTERM), and stops exactly that pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import weakref
from pathlib import Path

from server.broker._base import BrokerStartError, accepts_tcp, sleep_until
from server.broker._fleet_init import FleetConfig
from server.broker._listeners import ListenerPorts
from server.broker._mosquitto_conf import AUTOSAVE_INTERVAL_S, PERSISTENCE_FILE, render_mosquitto_conf

_SEARCH = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
    "/usr/local/opt/mosquitto/sbin/mosquitto",
)


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary: $FEDHFT_MOSQUITTO, then PATH, then the usual sbin folders."""
    env = os.environ.get("FEDHFT_MOSQUITTO")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _SEARCH if os.access(p, os.X_OK)), None)


def _die_with_us_prefix() -> list[str]:
    """Argv prefix that makes the broker get SIGTERM when its launcher dies, even by SIGKILL (a
    pytest timeout, a crashed simulate run), where no finalizer can run: Linux's parent-death
    signal, set by util-linux `setpriv`, which then execs mosquitto (same pid). The signal fires
    when the *thread* that forked exits, so it is only used from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


def _terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (Mosquitto then saves its persistence file), SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class MosquittoBroker(ListenerPorts):
    """A Mosquitto process for one fleet folder. Use as a context manager or start()/stop().

    `port`/`tls_port` default to the fleet's fixed ports, else free ones picked at the first start
    and kept for `restart()` (clients reconnect to the same url, persistence is the same folder).
    """

    kind = "mosquitto"
    mqtt5 = True
    _port_taken = "Address already in use"  # in the log tail that a failed start reports

    def __init__(
        self,
        config: FleetConfig | str | Path,
        port: int | None = None,
        host: str | None = None,
        *,
        tls_port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
        autosave_interval: int = AUTOSAVE_INTERVAL_S,
    ) -> None:
        self._init_ports(config, port, host, tls_port)
        self.binary = binary or find_mosquitto()
        self.start_timeout = start_timeout
        self.autosave_interval = autosave_interval
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    # -- addresses (url, tls_url: ListenerPorts) -----------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def conf_path(self) -> Path:
        return self.config.run_dir / "mosquitto.conf"

    @property
    def persistence_path(self) -> Path:
        """Mosquitto's database: rewritten on SIGTERM and at each autosave."""
        return self.config.conf_paths.data_dir / PERSISTENCE_FILE

    @property
    def log_path(self) -> Path:
        return self.config.run_dir / "mosquitto.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "MosquittoBroker":
        if self.running:
            return self
        if self.binary is None:
            raise BrokerStartError(
                "no mosquitto binary found: install it (Debian/Ubuntu: apt-get install mosquitto; "
                "macOS: brew install mosquitto), set FEDHFT_MOSQUITTO=/path/to/mosquitto, or use "
                "start_broker(fleet, prefer='embedded') for the pure-Python broker"
            )
        self._launch_on_ports()
        return self

    def _launch(self) -> None:
        run_dir = self.config.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (self.config.dir / "data").mkdir(exist_ok=True)
        conf = render_mosquitto_conf(
            self.config.conf_paths,
            fleet=self.config.fleet,
            max_packet_size=self.config.max_packet_size,
            host=self.host,
            port=self.port,
            tls_port=self.tls_port,
            run_as_root=os.geteuid() == 0,
            log_file=self.log_path,
            autosave_interval=self.autosave_interval,
        )
        self.conf_path.write_text(conf, encoding="utf-8")
        with open(self.log_path, "ab") as log:
            log.write(f"---- fedhft: starting mosquitto on port {self.port} ----\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [*_die_with_us_prefix(), self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # If the caller forgets stop() (or the interpreter exits), the broker still goes away.
        self._finalizer = weakref.finalize(self, _terminate, self._proc, 5.0)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        ports = [p for p in (self.port, self.tls_port) if p]
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerStartError(
                    f"mosquitto exited with code {code} during startup. Log tail ({self.log_path}):\n{self.log_tail()}"
                )
            # Ports were free at launch, so whoever accepts now is this process.
            if all(accepts_tcp(self.host, p) for p in ports) and self._proc.poll() is None:
                return
            if not sleep_until(deadline):
                self.stop()
                raise BrokerStartError(
                    f"mosquitto did not accept connections on {self.host}:{ports} within "
                    f"{self.start_timeout}s (raise start_timeout on a slow machine). Log tail "
                    f"({self.log_path}):\n{self.log_tail()}"
                )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM then SIGKILL by pid; waits for the exit. Safe to call twice."""
        if self._proc is not None:
            _terminate(self._proc, timeout)
            self._proc = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def kill(self) -> None:
        """SIGKILL, as a crash: messages queued since the last autosave are lost."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5.0)
        self.stop()

    def restart(self, *, hard: bool = False) -> "MosquittoBroker":
        """Stop (SIGTERM, or SIGKILL when `hard`) and start again on the same ports and data.

        SIGTERM makes Mosquitto save its database, so persistent sessions and their queued QoS 1
        messages survive. SIGKILL keeps only what the last autosave wrote. Measured on 2.0.11:
        saves come every `autosave_interval` + 1 seconds (Mosquitto compares whole seconds), and
        a session created 0.1 s before a hard restart was gone (session_present False).
        """
        self.kill() if hard else self.stop()
        self._keep_ports()
        return self.start()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"MosquittoBroker(fleet={self.config.fleet!r}, port={self.port}, {state})"
