"""The parity check must fail on the bugs it exists to catch, and pass on rounding noise."""

import numpy as np
import pytest

from devices import AdapterPlan
from export._verify import VERIFY_LR, compare
from fedhft.layout import ModelDims, init_trainable, mask_from_rows

PLAN = AdapterPlan(depth=1, ranks=(2,), mask_density=0.5)
DIMS = ModelDims(num_layers=2, hidden=4, intermediate=8, num_labels=2)
MASK = mask_from_rows(PLAN, DIMS, {"layer1.query.lora_B": [0, 1], "layer1.value.lora_B": [2, 3]})


def _trained(start, scale=1.0):
    """Every tensor moves by ~3 Adam steps, masked-off B rows stay."""
    out = {}
    for name, value in start.items():
        step = np.full_like(value, 3 * VERIFY_LR * scale)
        if name == "layer1.query.lora_B":
            step[2:] = 0
        if name == "layer1.value.lora_B":
            step[:2] = 0
        out[name] = value + step
    return out


@pytest.fixture
def start():
    return init_trainable(PLAN, DIMS, 0)


def _problems(start, backend_state, losses=(0.7, 0.6)):
    eager = (list(losses), _trained(start))
    return compare(
        type("M", (), {"plan": PLAN, "dims": DIMS})(), MASK, start, eager, (list(losses), backend_state), VERIFY_LR
    )[-1]


def test_rounding_noise_passes(start):
    noisy = {
        k: v + np.random.default_rng(0).normal(0, 1e-7, v.shape).astype(np.float32) for k, v in _trained(start).items()
    }
    for name in ("layer1.query.lora_B", "layer1.value.lora_B"):  # keep frozen rows exact
        noisy[name] = _trained(start)[name]
    assert _problems(start, noisy) == []


def test_frozen_parameter_is_caught(start):
    backend = _trained(start)
    backend["head.weight"] = start["head.weight"].copy()
    assert any("head.weight" in p for p in _problems(start, backend))


def test_wrong_step_size_is_caught(start):
    assert _problems(start, _trained(start, scale=1.5))


def test_mask_leak_is_caught(start):
    backend = _trained(start)
    backend["layer1.query.lora_B"] = backend["layer1.query.lora_B"] + 1e-3
    assert any("masked-off B rows moved" in p for p in _problems(start, backend))


def test_loss_divergence_is_caught(start):
    eager = ([0.7, 0.6], _trained(start))
    problems = compare(
        type("M", (), {"plan": PLAN, "dims": DIMS})(), MASK, start, eager, ([0.7, 0.65], _trained(start)), VERIFY_LR
    )[-1]
    assert any("step 1: loss" in p for p in problems)
