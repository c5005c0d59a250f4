"""Golden values for the shared layout and mask math (fedhft.layout)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import AdapterPlan
from fedhft.layout import (
    ModelDims,
    full_mask,
    gather_update,
    init_trainable,
    mask_from_rows,
    mask_layout,
    mask_length,
    masked_update_layout,
    rows_from_mask,
    rows_per_module,
    scatter_update,
    top_rows_by_energy,
    trainable_layout,
)

DIMS = ModelDims(num_layers=3, hidden=4, intermediate=8, num_labels=2)
PLAN = AdapterPlan(depth=2, ranks=(1, 2), mask_density=0.5)


def test_layout_golden_names_and_shapes():
    assert [(s.name, s.shape) for s in trainable_layout(PLAN, DIMS)] == [
        ("layer1.query.lora_A", (1, 4)),
        ("layer1.query.lora_B", (4, 1)),
        ("layer1.value.lora_A", (1, 4)),
        ("layer1.value.lora_B", (4, 1)),
        ("layer2.query.lora_A", (2, 4)),
        ("layer2.query.lora_B", (4, 2)),
        ("layer2.value.lora_A", (2, 4)),
        ("layer2.value.lora_B", (4, 2)),
        ("head.weight", (2, 4)),
        ("head.bias", (2,)),
    ]


def test_ffn_targets_use_intermediate_shapes():
    plan = AdapterPlan(depth=1, ranks=(2,), mask_density=1.0, targets="qv+ffn")
    shapes = {s.name: s.shape for s in trainable_layout(plan, DIMS)}
    assert shapes["layer2.intermediate.lora_A"] == (2, 4) and shapes["layer2.intermediate.lora_B"] == (8, 2)
    assert shapes["layer2.output.lora_A"] == (2, 8) and shapes["layer2.output.lora_B"] == (4, 2)
    assert mask_length(plan, DIMS) == 4 + 4 + 8 + 4


def test_mask_slices_are_contiguous_in_canonical_order():
    assert [(s.b_name, s.offset, s.rows) for s in mask_layout(PLAN, DIMS)] == [
        ("layer1.query.lora_B", 0, 4),
        ("layer1.value.lora_B", 4, 4),
        ("layer2.query.lora_B", 8, 4),
        ("layer2.value.lora_B", 12, 4),
    ]


def test_mask_rows_round_trip_golden():
    mask = mask_from_rows(PLAN, DIMS, {"layer1.query.lora_B": [0, 3], "layer2.value.lora_B": [1]})
    assert mask.tolist() == [1, 0, 0, 1] + [0] * 4 + [0] * 4 + [0, 1, 0, 0]
    rows = rows_from_mask(PLAN, DIMS, mask)
    assert rows["layer1.query.lora_B"].tolist() == [0, 3] and rows["layer2.query.lora_B"].tolist() == []


def test_mask_from_rows_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        mask_from_rows(PLAN, DIMS, {"layer1.query.lora_B": [4]})


def test_rows_per_module_rounds_and_keeps_one():
    assert rows_per_module(PLAN, 4) == 2
    assert rows_per_module(AdapterPlan(depth=1, ranks=(1,), mask_density=0.01), 4) == 1


def test_gather_scatter_golden():
    start = init_trainable(PLAN, DIMS, seed=3)
    trained = {k: v + 1.0 for k, v in start.items()}
    mask = mask_from_rows(PLAN, DIMS, {"layer1.query.lora_B": [2]})
    update = gather_update(PLAN, DIMS, start, trained, mask)
    assert update["layer1.query.lora_B"].shape == (1, 1) and update["layer1.value.lora_B"].shape == (0, 1)
    assert np.allclose(update["layer1.query.lora_A"], 1.0) and np.allclose(update["head.bias"], 1.0)
    assert [(s.name, s.shape) for s in masked_update_layout(PLAN, DIMS, mask)] == [
        (k, v.shape) for k, v in update.items()
    ]
    rebuilt = scatter_update(PLAN, DIMS, start, update, mask)
    b = rebuilt["layer1.query.lora_B"]
    assert b[2, 0] == pytest.approx(start["layer1.query.lora_B"][2, 0] + 1.0)
    assert np.array_equal(np.delete(b, 2, axis=0), np.delete(start["layer1.query.lora_B"], 2, axis=0))


def test_init_is_deterministic_with_zero_b():
    a, b = init_trainable(PLAN, DIMS, 7), init_trainable(PLAN, DIMS, 7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(not a[k].any() for k in a if k.endswith("lora_B"))
    assert np.abs(a["layer2.query.lora_A"]).max() <= 0.5  # U(+-1/sqrt(4))


def test_top_rows_by_energy_golden():
    dw = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])  # energies 0, 25, 1, 4
    assert top_rows_by_energy(dw, 2).tolist() == [1, 3]
    assert top_rows_by_energy(np.zeros((4, 2)), 2).tolist() == [0, 1]  # ties -> lowest index


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.integers(0, 12), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_top_rows_with_exploration_picks_k_distinct(rows, k, explore, seed):
    dw = np.random.default_rng(seed).standard_normal((rows, 3))
    got = top_rows_by_energy(dw, k, np.random.default_rng(seed), explore)
    assert len(got) == min(k, rows) == len(set(got.tolist())) and np.all(np.diff(got) > 0)


def test_full_mask_is_all_ones():
    assert full_mask(PLAN, DIMS).sum() == 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=2, ranks=(4,), mask_density=0.5), "one rank per adapted layer"),
        (dict(depth=2, ranks=(8, 4), mask_density=0.5), "non-decreasing"),
        (dict(depth=1, ranks=(4,), mask_density=0.0), "mask_density"),
        (dict(depth=1, ranks=(4,), mask_density=0.5, precision="int4"), "precision"),
        (dict(depth=1, ranks=(4,), mask_density=0.5, targets="all"), "targets"),
    ],
)
def test_plan_validation_names_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterPlan(**kwargs)


def test_plan_deeper_than_model_names_the_fix():
    with pytest.raises(ValueError, match="deeper than the model's 3 layers: use depth <= 3"):
        AdapterPlan(depth=4, ranks=(1, 1, 1, 1), mask_density=1.0).adapted_layers(3)


def test_plan_dict_round_trip_and_unknown_field():
    assert AdapterPlan.from_dict(PLAN.to_dict()) == PLAN
    with pytest.raises(ValueError, match="unknown AdapterPlan field"):
        AdapterPlan.from_dict({**PLAN.to_dict(), "rnak": 3})
