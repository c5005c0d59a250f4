"""The LEGEND-style estimate and planner."""

from __future__ import annotations

import pytest

from devices import AdapterPlan, Budget, DeviceProfile, ModelShape, PlanError, default_rank_profile, estimate, plan_for
from devices._planner import candidate_key

MINILM = ModelShape.minilm()


def test_minilm_shape_matches_the_checkpoint():
    assert MINILM.num_params == 22_713_216  # BertModel parameters of all-MiniLM-L6-v2
    assert (MINILM.num_layers, MINILM.hidden, MINILM.intermediate, MINILM.heads) == (6, 384, 1536, 12)
    assert default_rank_profile(6) == (2, 2, 4, 4, 8, 8)
    assert default_rank_profile(12) == (2,) * 4 + (4,) * 4 + (8,) * 4


def _plan(depth, precision="fp32", batch=16, seq=64):
    return AdapterPlan(depth, default_rank_profile(6)[6 - depth :], 1.0, precision, seq, batch)


def test_full_step_matches_the_measured_flop_count():
    # Measured (docs/DESIGN-NOTES.md): LoRA r=8 on q/v of all 6 layers, 16 x 64 tokens: about 44.7 GFLOP/step.
    assert estimate(AdapterPlan(6, (8,) * 6, 1.0, max_seq_len=64, batch_size=16), MINILM).flops == pytest.approx(
        44.7e9, rel=0.03
    )


def test_backward_stops_at_the_lowest_adapted_layer():
    full = estimate(_plan(6), MINILM).flops
    for d in range(1, 6):
        assert estimate(_plan(d), MINILM).flops / full == pytest.approx((6 + d) / 12, rel=0.02)


def test_estimate_grows_with_depth_tokens_and_precision():
    peaks = [estimate(_plan(d), MINILM).peak_mb for d in range(1, 7)]
    assert peaks == sorted(peaks)
    assert estimate(_plan(3, batch=8), MINILM).peak_mb < estimate(_plan(3, batch=16), MINILM).peak_mb
    fp32, int8 = estimate(_plan(3), MINILM), estimate(_plan(3, "int8"), MINILM)
    assert int8.parts["weights"] < fp32.parts["weights"] / 3
    assert sum(fp32.parts.values()) == pytest.approx(fp32.peak_mb)
    lean = estimate(_plan(3), MINILM, backend="ort")
    assert lean.peak_mb < fp32.peak_mb
    assert fp32.step_ms is None and estimate(_plan(3), MINILM, gflops=100).step_ms > 0
    ffn = AdapterPlan(3, (4, 8, 8), 1.0, max_seq_len=64, batch_size=16, targets="qv+ffn")
    assert estimate(ffn, MINILM).peak_mb > fp32.peak_mb and estimate(ffn, MINILM).flops > fp32.flops


def test_estimate_rejects_a_plan_deeper_than_the_model():
    with pytest.raises(ValueError, match="use depth <= 6"):
        estimate(AdapterPlan(7, (1,) * 7, 1.0), MINILM)
    with pytest.raises(ValueError, match="unknown backend"):
        estimate(_plan(1), MINILM, backend="tflite")


@pytest.mark.parametrize("backend", ["torch", "ort", "executorch"])
def test_plan_fits_its_budget(backend):
    for memory in (150, 250, 400, 700, 1500, 4000):
        budget = Budget(memory, 20.0, 3000.0, backend)
        try:
            plan = plan_for(budget, MINILM)
        except PlanError:
            continue
        est = estimate(plan, MINILM, backend=backend, gflops=20.0)
        assert est.peak_mb <= memory and est.step_ms <= 3000.0
        assert plan.problems(6) == [] and plan.ranks == default_rank_profile(6)[6 - plan.depth :]


@pytest.mark.parametrize("backend", ["torch", "ort", "executorch"])
def test_more_memory_or_compute_never_gives_a_smaller_plan(backend):
    def key(memory, gflops):
        try:
            return candidate_key(plan_for(Budget(memory, gflops, 1500.0, backend), MINILM))
        except PlanError:
            return (0, 0, 0, 0)

    memories = [100 + 40 * i for i in range(50)]
    by_memory = [key(m, 30.0) for m in memories]
    assert by_memory == sorted(by_memory) and by_memory[-1] > by_memory[0]
    by_compute = [key(800, g) for g in (1, 2, 5, 10, 20, 50, 100, 200)]
    assert by_compute == sorted(by_compute)


def test_plenty_gives_the_full_plan_and_scarcity_shrinks_it():
    big = plan_for(Budget(8000, 500.0), MINILM)
    assert (big.depth, big.batch_size, big.max_seq_len, big.precision, big.mask_density) == (6, 16, 128, "fp32", 1.0)
    small = plan_for(Budget(300, 10.0, backend="ort"), MINILM)
    assert candidate_key(small) < candidate_key(big)


def test_nothing_fits_says_what_is_needed():
    with pytest.raises(PlanError) as err:
        plan_for(Budget(100, 20.0), MINILM)
    msg = str(err.value)
    assert "no plan fits 100 MB" in msg and "at least" in msg and "'executorch'" in msg
    with pytest.raises(PlanError, match="step-time target"):
        plan_for(Budget(4000, 0.01, 10.0), MINILM)


def test_plan_for_a_device_profile_uses_a_share_of_available_memory():
    profile = DeviceProfile(8000, 1000, 4, None, None, 40.0, "Linux", "aarch64")
    plan = plan_for(profile, MINILM, backend="ort")
    assert estimate(plan, MINILM, backend="ort").peak_mb <= 500
    assert candidate_key(plan_for(profile, MINILM, backend="ort", memory_share=0.9)) >= candidate_key(plan)


def test_plan_for_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one per layer"):
        plan_for(Budget(4000, 50.0), MINILM, rank_profile=(8, 8))
    with pytest.raises(TypeError, match="Budget or a DeviceProfile"):
        plan_for(4000, MINILM)
    with pytest.raises(ValueError, match="unknown backend"):
        Budget(4000, 50.0, backend="tflite")
