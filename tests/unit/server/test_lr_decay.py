"""``lr_decay``: round r's tasks carry lr * lr_decay**r (FedHFT's reference code decays by 0.9 a round)."""

from __future__ import annotations

import pytest

from server import BundleIndex, Participant, ServerConfigError, build_strategy, plan_round, task_message

from .server_fakes import TIER_OF, fake_bundles, make_config


def test_tasks_carry_the_decayed_learning_rate(tmp_path):
    bundles = fake_bundles(tmp_path / "bundles")
    config = make_config(bundles, strategy="fedavg-lora", rounds=3, lr=0.01, lr_decay=0.5)
    index = BundleIndex.scan(config.bundles_dir)
    strategy = build_strategy(config, index)
    clients = sorted(TIER_OF)[:2]
    got = []
    for idx in range(3):
        plan = plan_round(strategy, index, idx, 7, [Participant(c, TIER_OF[c], "torch") for c in clients], "run")
        got.append({task_message(plan, c, index, config, deadline=0.0).hyper.lr for c in clients})
        strategy.round_idx = idx + 1
    assert got == [{0.01}, {0.005}, {0.0025}]


def test_the_default_keeps_the_learning_rate_constant(tmp_path):
    config = make_config(fake_bundles(tmp_path / "bundles"), strategy="fedavg-lora")
    assert config.lr_decay == 1.0


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_a_decay_outside_0_1_is_refused_with_the_fix(tmp_path, bad):
    with pytest.raises(ServerConfigError, match=r"lr_decay=.*use a factor in \(0, 1\]"):
        make_config(fake_bundles(tmp_path / "bundles"), lr_decay=bad)
