"""fedhft.config: YAML + overrides -> typed dataclass, every error at once, help table."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from devices import AdapterPlan
from fedhft.config import ConfigError, describe, load_config, to_dict


class Mode(enum.Enum):
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True)
class Mqtt:
    host: str = field(default="127.0.0.1", metadata={"help": "broker host"})
    port: int = field(default=1883, metadata={"help": "broker port"})
    tls: bool = field(default=False, metadata={"help": "use TLS"})

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")


@dataclass(frozen=True)
class Storage:
    root: Path = field(default=Path("runs"), metadata={"help": "state directory"})


@dataclass(frozen=True)
class Server:
    fleet: str = field(metadata={"help": "fleet id"})
    rounds: int = field(default=10, metadata={"help": "number of rounds"})
    lr: float = field(default=1e-3, metadata={"help": "client learning rate"})
    tiers: tuple[str, ...] = field(default=("low", "high"), metadata={"help": "tiers to serve"})
    ranks: list[int] = field(default_factory=lambda: [4, 8], metadata={"help": "ranks"})
    norm_bound: Optional[float] = field(default=None, metadata={"help": "update norm bound"})
    strategy: Literal["fedhft", "fedavg"] = field(default="fedhft", metadata={"help": "aggregation"})
    mode: Mode = field(default=Mode.SYNC, metadata={"help": "round mode"})
    weights: dict[str, float] = field(default_factory=dict, metadata={"help": "tier weights"})
    mqtt: Mqtt = field(default_factory=lambda: Mqtt(port=1884), metadata={"help": "broker connection"})
    storage: Storage = field(default_factory=Storage, metadata={"help": "storage"})

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides():
    cfg = load_config(Server, None, ["fleet=demo"])
    assert cfg == Server(fleet="demo")
    assert cfg.mqtt.port == 1884  # the parent's customised default section
    cfg = load_config(
        Server,
        None,
        [
            "fleet=007",
            "rounds=3",
            "lr=2e-4",
            "tiers=a,b,c",
            "ranks=[1, 2]",
            "norm_bound=5",
            "strategy=fedavg",
            "mode=ASYNC",
            "weights={low: 0.5}",
            "mqtt.tls=yes",
            "mqtt.host=broker",
            "storage.root=/tmp/x",
        ],
    )
    assert cfg.fleet == "007" and cfg.rounds == 3 and cfg.lr == 2e-4
    assert cfg.tiers == ("a", "b", "c") and cfg.ranks == [1, 2] and cfg.norm_bound == 5.0
    assert cfg.strategy == "fedavg" and cfg.mode is Mode.ASYNC and cfg.weights == {"low": 0.5}
    assert cfg.mqtt == Mqtt(host="broker", port=1884, tls=True)  # port kept from the parent's default
    assert cfg.storage.root == Path("/tmp/x")
    assert load_config(Server, None, ["fleet=x", "norm_bound=null"]).norm_bound is None


def test_yaml_then_overrides(tmp_path):
    path = _yaml(tmp_path, "fleet: demo\nrounds: 4\nmqtt:\n  port: 1999\ntiers: [x]\n")
    cfg = load_config(Server, path, ["rounds=5"])
    assert (cfg.fleet, cfg.rounds, cfg.mqtt.port, cfg.tiers) == ("demo", 5, 1999, ("x",))


def test_every_error_is_reported_at_once(tmp_path):
    path = _yaml(tmp_path, "fleet: 12\nrounds: many\nroudns: 3\nmqtt:\n  port: 70000\n  hots: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(Server, path, ["lr=fast", "ranks=[1, x]", "strategy=fedprox", "tiers.low=1"])
    errors = info.value.errors
    text = str(info.value)
    assert "fleet: expected str, got 12 (quote it in YAML" in text
    assert "rounds: expected int" in text
    assert "unknown key 'roudns'" in text and "did you mean 'rounds'?" in text
    assert "unknown key 'mqtt.hots'" in text and "did you mean 'mqtt.host'?" in text
    assert "lr: expected float" in text
    assert "ranks[1]: expected int" in text
    assert "strategy" in text and "fedhft" in text
    assert "tiers" in text
    assert len(errors) >= 8, errors


def test_post_init_failures_are_collected():
    with pytest.raises(ConfigError) as info:
        load_config(Server, None, ["fleet=x", "rounds=0", "mqtt.port=0"])
    text = str(info.value)
    assert "mqtt: port must be in 1..65535, got 0" in text
    # the parent is not validated while a section is broken (its error would only be noise)
    with pytest.raises(ConfigError, match="Server: rounds must be >= 1"):
        load_config(Server, None, ["fleet=x", "rounds=0"])


def test_missing_required_and_malformed_inputs(tmp_path):
    with pytest.raises(ConfigError, match="fleet is required"):
        load_config(Server)
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(Server, None, ["fleet"])
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Server, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Server, _yaml(tmp_path, "a: [1,\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Server, _yaml(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="mqtt is a section"):
        load_config(Server, None, ["fleet=x", "mqtt=broker"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(Server, None, ["fleet=x", "rounds=1", "rounds.x=2"])
    with pytest.raises(TypeError):
        load_config(dict)
    with pytest.raises(TypeError, match="wrap it in"):
        load_config(Server, None, "fleet=x")


@dataclass(frozen=True)
class WithOptionalSection:
    name: str = "x"
    mqtt: Optional[Mqtt] = None
    limit: int | str = 3


def test_optional_sections_and_unions():
    assert load_config(WithOptionalSection).mqtt is None
    cfg = load_config(WithOptionalSection, None, ["mqtt.port=99", "limit=auto"])
    assert cfg.mqtt == Mqtt(port=99) and cfg.limit == "auto"
    assert load_config(WithOptionalSection, None, ["limit=7"]).limit == 7
    with pytest.raises(ConfigError, match="mqtt: port must be in"):
        load_config(WithOptionalSection, None, ["mqtt.port=0"])


@pytest.mark.parametrize("text, expected", [("true", True), ("No", False), ("1", True), ("off", False)])
def test_bool_words(text, expected):
    assert load_config(Server, None, ["fleet=x", f"mqtt.tls={text}"]).mqtt.tls is expected


def test_bool_rejects_other_values():
    with pytest.raises(ConfigError, match="use true or false"):
        load_config(Server, None, ["fleet=x", "mqtt.tls=maybe"])


def test_adapter_plan_from_overrides():
    plan = load_config(AdapterPlan, None, ["depth=2", "ranks=4,8", "mask_density=0.5", "targets=qv+ffn"])
    assert plan == AdapterPlan(depth=2, ranks=(4, 8), mask_density=0.5, targets="qv+ffn")
    with pytest.raises(ConfigError, match="ranks must be non-decreasing"):
        load_config(AdapterPlan, None, ["depth=2", "ranks=8,4", "mask_density=0.5"])


def test_describe_lists_every_key_with_help():
    text = describe(Server)
    for key in ("fleet", "rounds", "mqtt.port", "mqtt.tls", "storage.root", "norm_bound"):
        assert key in text
    assert "(required)" in text and "broker port" in text
    port_row = next(line for line in text.splitlines() if line.startswith("mqtt.port"))
    assert "1884" in port_row  # the effective default (the parent's section), not Mqtt's own 1883
    assert "Optional[float]" in text or "float | None" in text
    assert "mask_density" in describe(AdapterPlan)


def test_to_dict_round_trips_through_yaml(tmp_path):
    import yaml

    cfg = load_config(Server, None, ["fleet=demo", "mode=ASYNC", "storage.root=/r"])
    path = _yaml(tmp_path, yaml.safe_dump(to_dict(cfg)))
    assert load_config(Server, path) == cfg
