"""``ServerConfig``: every knob of a server run, with its default and help text in one place.

Loaded from a YAML file plus ``key=value`` overrides by ``fedhft.config`` (``load_server_config``).
Every problem is reported at once, each naming the key and the fix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from fedhft.config import ConfigError
from fedhft.mqtt import (
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_MQTT_PROTOCOL,
    MQTT_PROTOCOLS,
    SERVER_SESSION_EXPIRY_S,
    MqttProtocol,
)
from fedhft.protocol import ENCODINGS

TIER_MODES = ("catalog", "planner")


class ServerConfigError(ConfigError):
    """One or more invalid server settings; the message lists each with its fix."""


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one federated run. ``fleet`` and ``bundles_dir`` are required."""

    fleet: str = field(metadata={"help": "fleet name (the MQTT topic prefix fedhft/v1/<fleet>/)"})
    bundles_dir: str = field(metadata={"help": "export output: <dir>/<tier>/<backend>/manifest.json"})
    strategy: str = field(default="fedhft", metadata={"help": "aggregation strategy name (see server.strategies)"})
    strategy_options: dict = field(default_factory=dict, metadata={"help": "keyword arguments of the strategy"})
    rounds: int = field(default=10, metadata={"help": "number of rounds to run, then stop"})
    clients_per_round: float = field(
        default=1.0, metadata={"help": "clients selected per round: a count (>= 1, integer) or a fraction in (0, 1)"}
    )
    min_clients: int = field(default=1, metadata={"help": "eligible online clients needed before a round starts"})
    quorum: float = field(
        default=1.0, metadata={"help": "fraction of the selected clients whose stored updates close the round early"}
    )
    round_deadline_s: float = field(default=600.0, metadata={"help": "a round closes this many seconds after it opens"})
    start_grace_s: float = field(
        default=0.0, metadata={"help": "seconds to wait after min_clients are online before starting a round"}
    )
    local_steps: int = field(default=10, metadata={"help": "local optimizer steps per task (0: use epochs)"})
    local_epochs: int = field(default=0, metadata={"help": "local epochs per task (when local_steps is 0)"})
    lr: float = field(default=1e-3, metadata={"help": "local learning rate"})
    lr_decay: float = field(
        default=1.0, metadata={"help": "round r's tasks use lr * lr_decay**r (FedHFT's reference code: 0.9)"}
    )
    update_encoding: str = field(
        default="fp16", metadata={"help": "update encoding asked of clients: fp32, fp16 or int8"}
    )
    norm_bound: float = field(default=1e3, metadata={"help": "updates with a larger global L2 norm are rejected"})
    battery_threshold: float = field(
        default=20.0, metadata={"help": "clients on battery below this percent are not selected"}
    )
    tier_mode: str = field(default="catalog", metadata={"help": "tier assignment: catalog (recommend_tier) or planner"})
    warmup_rounds: int = field(default=2, metadata={"help": "rounds before clustering starts (clustered strategies)"})
    seed: int = field(default=0, metadata={"help": "seed of client selection and of the strategy"})
    max_packet_size: int = field(
        default=DEFAULT_MAX_PACKET_SIZE,
        metadata={"help": "the broker's max_packet_size: larger messages are refused before publishing"},
    )
    chunk_size: int = field(default=96 * 1024, metadata={"help": "bundle chunk bytes (capped to fit max_packet_size)"})
    intake_batch: int = field(default=64, metadata={"help": "updates stored per durable commit (group commit)"})
    session_expiry_s: int = field(
        default=SERVER_SESSION_EXPIRY_S,
        metadata={
            "help": "broker keeps the server's session (and queued updates) "
            "this long (MQTT 5 only; on 3.1.1 the broker's own "
            "setting decides)"
        },
    )
    mqtt_protocol: MqttProtocol = field(
        default=DEFAULT_MQTT_PROTOCOL,
        metadata={
            "help": "MQTT protocol version: 5, or 3.1.1 for a broker without "
            "MQTT 5 (the embedded amqtt broker); 3.1.1 has no PUBACK "
            "reason codes, so ACL refusals are silent"
        },
    )

    def __post_init__(self) -> None:
        errors = self.problems()
        if errors:
            raise ServerConfigError("invalid server config:\n  - " + "\n  - ".join(errors))

    def problems(self) -> list[str]:
        errs = []
        if not self.fleet:
            errs.append("fleet is empty: set fleet=<name> (the name given to fleet-init)")
        if not self.bundles_dir:
            errs.append("bundles_dir is empty: set bundles_dir=<export output dir>")
        if self.rounds < 1:
            errs.append(f"rounds={self.rounds}: use >= 1")
        c = self.clients_per_round
        if not (0 < c < 1 or (c >= 1 and float(c).is_integer())):
            errs.append(f"clients_per_round={c}: use a fraction in (0, 1) or a whole count >= 1")
        if self.min_clients < 1:
            errs.append(f"min_clients={self.min_clients}: use >= 1")
        if not 0 < self.quorum <= 1:
            errs.append(f"quorum={self.quorum}: use a fraction in (0, 1]")
        if not self.round_deadline_s > 0:
            errs.append(f"round_deadline_s={self.round_deadline_s}: use > 0 seconds")
        return errs + self._training_problems()

    def _training_problems(self) -> list[str]:
        errs = []
        if self.local_steps < 0 or self.local_epochs < 0 or (self.local_steps == 0 and self.local_epochs == 0):
            errs.append("local_steps and local_epochs: give local_steps >= 1, or local_steps=0 and local_epochs >= 1")
        if not 0 < self.lr <= 10:
            errs.append(f"lr={self.lr}: use a learning rate in (0, 10]")
        if not 0 < self.lr_decay <= 1:
            errs.append(f"lr_decay={self.lr_decay}: use a factor in (0, 1] (1 = a constant learning rate)")
        if self.update_encoding not in ENCODINGS:
            errs.append(f"update_encoding={self.update_encoding!r}: use one of {list(ENCODINGS)}")
        if not (self.norm_bound > 0 and math.isfinite(self.norm_bound)):
            errs.append(f"norm_bound={self.norm_bound}: use a finite number > 0")
        if self.tier_mode not in TIER_MODES:
            errs.append(f"tier_mode={self.tier_mode!r}: use one of {list(TIER_MODES)}")
        if not 1024 <= self.max_packet_size <= 268_435_455:
            errs.append(f"max_packet_size={self.max_packet_size}: use the broker's value, 1024..268435455")
        if not 1024 <= self.chunk_size:
            errs.append(f"chunk_size={self.chunk_size}: use >= 1024 bytes")
        if self.mqtt_protocol not in MQTT_PROTOCOLS:
            errs.append(f"mqtt_protocol={self.mqtt_protocol!r}: use one of {list(MQTT_PROTOCOLS)}")
        if self.intake_batch < 1 or self.warmup_rounds < 0 or self.session_expiry_s < 0:
            errs.append("intake_batch must be >= 1, warmup_rounds and session_expiry_s >= 0")
        return errs

    def select_count(self, eligible: int) -> int:
        """How many of ``eligible`` clients a round selects (at least 1 when any is eligible)."""
        c = self.clients_per_round
        n = math.ceil(c * eligible) if c < 1 else int(c)
        return max(min(n, eligible), 1 if eligible else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_server_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ServerConfig:
    """YAML file (optional) + ``key=value`` overrides -> ServerConfig, through ``fedhft.config``
    (every problem reported at once). A relative ``bundles_dir`` in the file resolves against the
    file's folder, so a config travels with its bundles."""
    from fedhft.config import load_config

    try:
        config = load_config(ServerConfig, path, list(overrides))
    except ConfigError as exc:
        raise ServerConfigError(str(exc)) from None
    if path is not None and not Path(config.bundles_dir).is_absolute():
        config = replace(config, bundles_dir=str((Path(path).parent / config.bundles_dir).resolve()))
    return config


def config_help() -> str:
    """Every key with its type, default and help (``fedhft server run --help-config``)."""
    from fedhft.config import describe

    return describe(ServerConfig)
