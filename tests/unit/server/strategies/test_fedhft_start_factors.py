"""FedHFT's start_factors: how a client's start dW is split into A and B (the product is the same)."""

from __future__ import annotations

import numpy as np
import pytest

from fedhft.layout import adapted_modules, lora_names
from server.strategies import get_strategy
from server.strategies._math import INIT_A_ROW_NORM
from tests.unit.server.strategies._helpers import DIMS, make_clients, run_round


def _starts(start_factors: str, rounds: int = 1):
    """The starts of round ``rounds``: round 0 starts from a zero dW (A = the fill, B = 0) under both
    factorizations, so its updates and the state after it are the same, and only the split differs."""
    s = get_strategy("fedhft", dims=DIMS, num_clusters=1, start_factors=start_factors)
    clients = make_clients(2)
    for r in range(rounds):
        run_round(s, r, clients, lambda c: DIMS)
    return s.configure(rounds, clients), clients


def test_init_norm_gives_the_same_start_products_with_a_rows_at_the_init_norm():
    balanced, clients = _starts("balanced")
    init_norm, _ = _starts("init_norm")
    for c in clients:
        plan = balanced[c.client_id].plan
        for layer, module, rank in adapted_modules(plan, DIMS):
            a_name, b_name = lora_names(layer, module)
            x, y = balanced[c.client_id].start_state, init_norm[c.client_id].start_state
            np.testing.assert_allclose(y[b_name] @ y[a_name], x[b_name] @ x[a_name], atol=1e-6)
            live = np.abs(y[b_name]).sum(axis=0) > 0  # components with a singular value (the rest keep the fill)
            assert live.any()
            np.testing.assert_allclose(np.linalg.norm(y[a_name][live], axis=1), INIT_A_ROW_NORM, rtol=1e-5)
        np.testing.assert_array_equal(balanced[c.client_id].mask, init_norm[c.client_id].mask)


def test_start_factors_is_in_the_config_and_a_state_saved_before_the_option_loads_as_balanced():
    s = get_strategy("fedhft", dims=DIMS, start_factors="init_norm")
    run_round(s, 0, make_clients(1), lambda c: DIMS)
    tensors, meta = s.state_dict()
    assert meta["config"]["start_factors"] == "init_norm"
    wrong = get_strategy("fedhft", dims=DIMS, start_factors="balanced")
    with pytest.raises(ValueError, match="construct it with the saved config"):
        wrong.load_state_dict(tensors, meta)
    old = get_strategy("fedhft", dims=DIMS, start_factors="balanced")
    run_round(old, 0, make_clients(1), lambda c: DIMS)
    tensors, meta = old.state_dict()
    del meta["config"]["start_factors"]  # as written before the option existed
    again = get_strategy("fedhft", dims=DIMS, start_factors="balanced")
    again.load_state_dict(tensors, meta)
    assert again.round_idx == 1


def test_an_unknown_start_factors_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"start_factors must be one of \('balanced', 'init_norm'\)"):
        get_strategy("fedhft", dims=DIMS, start_factors="unit")
