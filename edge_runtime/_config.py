"""``AgentConfig``: every setting of the edge runtime, with its default and help in one place.

`fedhft edge` takes these fields as ``key=value`` words (``memory_budget_mb=256``) and as the keys
of a YAML file (``--config``), both through ``fedhft.config.load_config``, so a default is written
once; ``fedhft edge --help-config`` lists them. ``problems()`` lists every invalid setting at once,
each spelled as the key=value to fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fedhft.mqtt import (
    DEFAULT_KEEPALIVE_S,
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_MQTT_PROTOCOL,
    DEVICE_SESSION_EXPIRY_S,
    MQTT_PROTOCOLS,
    MqttProtocol,
)


def _f(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class AgentConfig:
    broker: str | None = _f(None, "broker address mqtt://HOST:PORT or mqtts://HOST:PORT (default: from credentials=)")
    client_id: str | None = _f(None, "this device's id (= its MQTT username); default: from credentials=")
    data: str | None = _f(None, "labelled local data: a .tsv, .csv or .jsonl file")
    fleet: str | None = _f(
        None, "fleet name (topic prefix fedhft/v1/<fleet>/); default: from credentials=, else 'default'"
    )
    tier: str = _f("auto", "device tier name from the catalog, or 'auto' to pick one from the measured profile")
    backend: str = _f(
        "auto", "training backends this device offers: auto (every installed one), torch, ort or executorch"
    )
    username: str | None = _f(None, "MQTT username (default: the client id)")
    password: str | None = _f(
        None, "MQTT password (prefer credentials=FILE.json: the command line shows in `ps`)", secret=True
    )
    credentials: str | None = _f(
        None, "device credentials file written by `fedhft server fleet-init` (clients/<id>.json)"
    )
    tls_ca: str | None = _f(None, "CA certificate that signed the broker's certificate (mqtts://)")
    tls_cert: str | None = _f(None, "client certificate, when the broker requires one")
    tls_key: str | None = _f(None, "client private key for tls_cert=")
    state: str | None = _f(
        None, "state directory (checkpoint, persisted updates, bundle cache); default ~/.fedhft/edge/<client>"
    )
    bundle_dir: str | None = _f(
        None, "pre-provisioned bundles DIR/<tier>/<backend>/ (used when their digest matches; no download)"
    )
    text_column: str | None = _f(
        None, "text column (auto: text/sentence/review/content, or a sentence1+sentence2 style pair)"
    )
    text_pair_column: str | None = _f(None, "second text column of a pair task")
    label_column: str | None = _f(None, "label column (auto: label/labels/class/category/y)")
    label_map: str | None = _f(None, 'JSON object mapping string labels to class ids, e.g. \'{"neg": 0, "pos": 1}\'')
    val_fraction: float = _f(0.15, "fraction of local examples held out for local validation (at least one)")
    memory_budget_mb: float | None = _f(None, "peak RSS budget of this process in MB (default: the tier's budget)")
    memory_accounting: str = _f(
        "process",
        "what the budget counts: 'process' (whole RSS; real devices) or 'bundle' "
        "(RSS above the host baseline after the runtime is imported, "
        "before the bundle loads; for simulating a native runtime on a Python host)",
    )
    memory_margin: float = _f(0.90, "stop training when RSS reaches this fraction of the memory budget")
    battery_threshold: float | None = _f(
        None, "skip rounds on battery below this percent (default: the tier's, else 20)"
    )
    simulated_battery: str | None = _f(
        None,
        "simulate a battery: "
        "'level=50,drain_per_step=0.1,charging=0,capacity_pct=100' "
        "(its level persists in the state directory)",
    )
    threads: int | None = _f(None, "CPU threads for training (default: the runtime's choice)")
    keepalive: int = _f(
        DEFAULT_KEEPALIVE_S, "MQTT keepalive seconds (the broker declares the device gone after 1.5x this)"
    )
    session_expiry_s: int = _f(
        DEVICE_SESSION_EXPIRY_S,
        "how long the broker keeps this device's session and queued tasks (MQTT 5 only; on "
        "3.1.1 the broker's own setting decides)",
    )
    mqtt_protocol: MqttProtocol = _f(
        DEFAULT_MQTT_PROTOCOL,
        "MQTT protocol version: 5, or 3.1.1 for a broker without MQTT 5 (the embedded "
        "amqtt broker); on 3.1.1 an ACL-refused publish is not reported",
    )
    max_packet_size: int = _f(
        DEFAULT_MAX_PACKET_SIZE, "packet limit assumed when the broker does not advertise one in CONNACK"
    )
    ack_timeout_s: float = _f(30.0, "re-send an unacknowledged update (the same bytes) after this many seconds")
    bundle_timeout_s: float = _f(600.0, "give up a bundle download after this many seconds without progress")
    deadline_reserve_s: float = _f(1.0, "seconds kept before the round deadline to encode and upload")
    progress_every: int = _f(10, "log a progress line every N training steps")
    log_format: str = _f("json", "log lines as json or kv (key=value)")
    max_rounds: int = _f(0, "exit after finishing this many rounds (0 = run until stopped)")

    def __post_init__(self) -> None:
        if self.credentials:
            self._fill_from_credentials()
        if self.username is None:
            self.username = self.client_id
        if self.fleet is None:
            self.fleet = "default"
        if self.state is None and self.client_id:
            self.state = str(Path.home() / ".fedhft" / "edge" / self.client_id)

    def _fill_from_credentials(self) -> None:
        from fedhft.credentials import load_credentials

        cred = load_credentials(self.credentials)
        self.client_id = self.client_id or cred.client_id
        self.username = self.username or cred.username
        self.password = self.password if self.password is not None else cred.password
        self.fleet = self.fleet or cred.fleet
        self.broker = self.broker or cred.broker_url
        self.tls_ca = self.tls_ca or cred.tls_ca
        self.tls_cert = self.tls_cert or cred.tls_cert
        self.tls_key = self.tls_key or cred.tls_key

    def problems(self) -> list[str]:
        """Every invalid setting, each with its fix."""
        errs = []
        for name, fix in (
            ("broker", "broker=mqtt://HOST:PORT (or a credentials= file that has it)"),
            ("client_id", "client_id=ID (or a credentials= file that has it)"),
            ("data", "data=PATH (the labelled local data file)"),
        ):
            if not getattr(self, name):
                errs.append(f"{name} is not set: pass {fix}")
        if self.broker:
            from fedhft.mqtt import BrokerUrlError, parse_broker_url

            try:
                tls = parse_broker_url(self.broker).tls
                if not tls and (self.tls_ca or self.tls_cert):
                    errs.append(f"tls_ca/tls_cert are given but broker={self.broker} is not TLS: use mqtts://")
            except BrokerUrlError as exc:
                errs.append(str(exc))
        return errs + self._value_problems()

    def _value_problems(self) -> list[str]:
        errs = []
        if self.data and not os.path.isfile(self.data):
            errs.append(f"data={self.data}: no such file")
        if self.backend not in ("auto", "torch", "ort", "executorch"):
            errs.append(f"backend={self.backend!r}: use auto, torch, ort or executorch")
        if self.memory_accounting not in ("process", "bundle"):
            errs.append(f"memory_accounting must be 'process' or 'bundle', got {self.memory_accounting!r}")
        if self.memory_budget_mb is not None and self.memory_budget_mb <= 0:
            errs.append(f"memory_budget_mb must be > 0, got {self.memory_budget_mb}")
        if not 0.1 <= self.memory_margin <= 1.0:
            errs.append(f"memory_margin must be in [0.1, 1], got {self.memory_margin}")
        if not 0.0 < self.val_fraction < 1.0:
            errs.append(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.mqtt_protocol not in MQTT_PROTOCOLS:
            errs.append(f"mqtt_protocol={self.mqtt_protocol!r}: use one of {list(MQTT_PROTOCOLS)}")
        if self.log_format not in ("json", "kv"):
            errs.append(f"log_format={self.log_format!r}: use json or kv")
        if bool(self.tls_cert) != bool(self.tls_key):
            errs.append("tls_cert= and tls_key= go together: pass both or neither")
        for name in ("label_map",):
            try:
                self.label_map_dict()
            except ValueError as exc:
                errs.append(str(exc))
        try:
            self.battery_options()
        except ValueError as exc:
            errs.append(str(exc))
        return errs

    def label_map_dict(self) -> dict[str, int] | None:
        if not self.label_map:
            return None
        try:
            mapping = json.loads(self.label_map)
            if not isinstance(mapping, dict):
                raise ValueError
            return {str(k): int(v) for k, v in mapping.items()}
        except (ValueError, TypeError):
            raise ValueError(
                f'label_map={self.label_map!r} is not a JSON object of label -> int, e.g. \'{{"neg": 0, "pos": 1}}\''
            ) from None

    def battery_options(self) -> dict | None:
        """``simulated_battery=`` as SimulatedBattery keyword arguments (None: use the real battery)."""
        if not self.simulated_battery:
            return None
        known = {
            "level": float,
            "drain_per_step": float,
            "charging": lambda v: v.lower() in ("1", "true", "yes"),
            "capacity_pct": float,
            "charge_per_step": float,
        }
        out = {}
        for item in filter(None, self.simulated_battery.split(",")):
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in known or not value:
                raise ValueError(f"simulated_battery item {item!r}: use key=value with keys {sorted(known)}")
            try:
                out[key] = known[key](value.strip())
            except ValueError:
                raise ValueError(f"simulated_battery {key}={value!r} is not a number") from None
        return out
