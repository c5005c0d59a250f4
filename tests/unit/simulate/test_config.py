"""SimConfig: defaults, YAML + key=value, every problem reported at once."""

from __future__ import annotations

import pytest

from fedhft.config import ConfigError
from simulate import SimConfig, load_sim_config
from simulate._fleet import server_config
from simulate._prepare import assign_tiers


def test_defaults_are_the_demo():
    cfg = load_sim_config()
    assert (cfg.model, cfg.dataset, cfg.clients, cfg.rounds) == ("minilm", "rotten_tomatoes", 12, 5)
    assert cfg.tiers == ["android-mid", "rpi5", "jetson-orin-nano"]
    assert cfg.tier_backend("rpi5", "ort") == "ort"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text(
        "model: tiny\nclients: 6\ntiers: [rpi5]\nbackends: {rpi5: torch}\nstrategy_options: {num_clusters: 3}\n"
    )
    cfg = load_sim_config(path, ["rounds=2", "backend=torch", "clients_per_round=0.5"])
    assert (cfg.model, cfg.clients, cfg.rounds, cfg.clients_per_round) == ("tiny", 6, 2, 0.5)
    assert cfg.tier_backend("rpi5", "ort") == "torch" and cfg.strategy_options == {"num_clusters": 3}


def test_type_and_key_errors_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_sim_config(None, ["clientz=4", "rounds=many", "alpha=x"])
    text = str(err.value)
    assert "3 problem(s)" in text and "did you mean 'clients'" in text and "rounds" in text and "alpha" in text


def test_value_errors_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_sim_config(
            None,
            [
                "alpha=-1",
                "encoding=fp8",
                "partition=shards",
                "backend=tpu",
                "broker=mqtt://127.0.0.1:1884",
                "clients_per_round=2.5",
                "memory_budget=lots",
            ],
        )
    text = str(err.value)
    for needle in (
        "alpha=-1",
        "encoding='fp8'",
        "partition='shards'",
        "backend='tpu'",
        "fleet_dir",
        "clients_per_round=2.5",
        "memory_budget='lots'",
    ):
        assert needle in text, needle


def test_server_config_runs_every_client_each_round(tmp_path):
    cfg = SimConfig(clients=5, rounds=3, strategy="hetlora", encoding="int8")
    sc = server_config(cfg, tmp_path, cfg.rounds)
    assert sc["clients_per_round"] == 5.0 and sc["min_clients"] == 5 and sc["update_encoding"] == "int8"
    from server import ServerConfig  # the YAML we write must be a valid ServerConfig

    ServerConfig(**sc)


def test_the_learning_rate_decay_reaches_the_server(tmp_path):
    cfg = SimConfig(lr=0.01, lr_decay=0.9)
    assert server_config(cfg, tmp_path, cfg.rounds)["lr_decay"] == 0.9
    with pytest.raises(ValueError, match="lr_decay=1.5"):
        SimConfig(lr_decay=1.5)


def test_assign_tiers_round_robin_and_weights():
    ids = [f"d{i}" for i in range(7)]
    assert list(assign_tiers(ids, ["a", "b"], None).values()) == ["a", "b", "a", "b", "a", "b", "a"]
    got = assign_tiers(ids, ["a", "b", "c"], [0.6, 0.2, 0.2])
    assert sorted(got.values()).count("a") == 4 and len(got) == 7


@pytest.mark.parametrize(
    "path", sorted((__import__("pathlib").Path(__file__).resolve().parents[3] / "configs").glob("*.yaml"))
)
def test_example_configs_load(path):
    assert load_sim_config(path).rounds >= 1


@pytest.mark.parametrize(
    "items, needle",
    [
        (
            ["strategy_options={groups: partition}", "partition=dirichlet"],
            "groups='partition' with partition=dirichlet",
        ),
        (["strategy_options={groups: domains}", "partition=natural"], "groups='domains' with partition=natural"),
    ],
)
def test_groups_from_the_partition_need_a_natural_partition(items, needle):
    with pytest.raises(ConfigError) as err:
        load_sim_config(None, ["strategy=fedhft", *items])
    assert needle in str(err.value) and "use groups=partition with partition=natural" in str(err.value)


def test_groups_partition_is_replaced_by_the_clients_keys_and_nothing_else_is():
    cfg = load_sim_config(
        None, ["strategy=fedhft", "partition=natural", "strategy_options={groups: partition, explore: 0.1}"]
    )
    filled = cfg.with_partition_groups({"dev-000": "books", "dev-001": "dvd"})
    assert filled.strategy_options == {"groups": {"dev-000": "books", "dev-001": "dvd"}, "explore": 0.1}
    assert cfg.strategy_options["groups"] == "partition"  # the config itself is unchanged
    plain = load_sim_config(None, ["strategy=fedhft"])
    assert plain.with_partition_groups({"dev-000": "books"}) is plain
    with pytest.raises(ValueError, match="needs the natural partition's client groups"):
        cfg.with_partition_groups(None)


def test_local_epochs_replace_local_steps_and_reach_the_server(tmp_path):
    cfg = load_sim_config(None, ["local_steps=0", "local_epochs=2"])
    sc = server_config(cfg, tmp_path, cfg.rounds)
    assert (sc["local_steps"], sc["local_epochs"]) == (0, 2)
    from server import ServerConfig

    ServerConfig(**sc)
    assert server_config(SimConfig(), tmp_path, 1)["local_epochs"] == 0


@pytest.mark.parametrize(
    "items",
    [["local_steps=0"], ["local_steps=4", "local_epochs=2"], ["local_steps=-1"], ["local_steps=0", "local_epochs=-2"]],
)
def test_local_steps_and_local_epochs_need_exactly_one(items):
    with pytest.raises(ConfigError) as err:
        load_sim_config(None, items)
    assert "give local_steps >= 1" in str(err.value) and "local_epochs >= 1" in str(err.value)
