"""Update encoding: error bounds, determinism, exact size bound, server-side validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import AdapterPlan
from fedhft.layout import ModelDims, TensorSpec, gather_update, init_trainable, masked_update_layout, mask_from_rows
from fedhft.protocol import (
    ENCODINGS,
    SCALE_SUFFIX,
    MalformedMessage,
    Rejection,
    decode_update,
    dequantize_int8,
    encode_update,
    max_encoded_size,
    quantize_int8,
    update_digest,
    validate_update,
)
from fedhft.protocol._update_codec import is_tensor_name


def _random_tensors(rng, specs):
    return {s.name: (rng.standard_normal(s.shape) * rng.uniform(1e-4, 10)).astype(np.float32) for s in specs}


def test_fp32_is_lossless_and_deterministic():
    rng = np.random.default_rng(0)
    t = _random_tensors(rng, [TensorSpec("a", (3, 5)), TensorSpec("b", (7,)), TensorSpec("c", ())])
    body = encode_update(t, "fp32")
    assert body == encode_update(dict(reversed(list(t.items()))), "fp32")
    back = decode_update(body, "fp32")
    for k in t:
        np.testing.assert_array_equal(back[k], t[k])
        assert back[k].dtype == np.float32
    assert update_digest(body) == update_digest(encode_update(t, "fp32"))


def test_int8_error_is_at_most_half_a_step_per_element():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 33)).astype(np.float32) * rng.uniform(1e-6, 1e3, size=(64, 1)).astype(np.float32)
    x[3] = 0.0  # an all-zero row: scale 0, decoded exactly
    body = encode_update({"w": x, "b": x[5]}, "int8")
    back = decode_update(body, "int8")
    q, scale = quantize_int8(x)
    assert q.dtype == np.int8 and scale.shape == (64,) and np.abs(q).max() <= 127
    err = np.abs(back["w"] - x)
    bound = scale[:, None] / 2 * (1 + 1e-6) + np.abs(x) * 1e-7
    assert np.all(err <= bound)
    assert np.all(back["w"][3] == 0.0)
    _, bscale = quantize_int8(x[5])
    assert bscale.shape == (1,)
    assert np.all(np.abs(back["b"] - x[5]) <= bscale[0] / 2 * (1 + 1e-6) + np.abs(x[5]) * 1e-7)


def test_int8_wire_layout():
    from safetensors.numpy import load

    raw = load(encode_update({"w": np.ones((2, 3), np.float32), "v": np.ones(4, np.float32)}, "int8"))
    assert raw["w"].dtype == np.int8 and raw["w" + SCALE_SUFFIX].shape == (2,)
    assert raw["v" + SCALE_SUFFIX].shape == (1,) and raw["v" + SCALE_SUFFIX].dtype == np.float32
    np.testing.assert_array_equal(dequantize_int8(raw["w"], raw["w" + SCALE_SUFFIX]), np.ones((2, 3)))


def test_int8_refuses_non_finite():
    with pytest.raises(ValueError, match="non-finite"):
        encode_update({"w": np.array([1.0, np.nan], np.float32)}, "int8")


def test_fp16_error_bound():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(10000) * 10.0 ** rng.uniform(-9, 4, 10000)).astype(np.float32)
    back = decode_update(encode_update({"x": x}, "fp16"), "fp16")["x"]
    err = np.abs(back - x)
    assert np.all(err <= np.maximum(np.abs(x) * 2.0**-11, 2.0**-25))


def test_fp16_overflow_becomes_inf_and_is_rejected():
    back = decode_update(encode_update({"x": np.array([1e6], np.float32)}, "fp16"), "fp16")
    assert np.isinf(back["x"][0])
    assert [r.reason_code for r in validate_update(back, [TensorSpec("x", (1,))])] == ["non_finite"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_empty_and_degenerate_shapes(encoding):
    t = {
        "e": np.zeros((0, 4), np.float32),
        "z": np.zeros((3, 0), np.float32),
        "s": np.float32(2.5),
        "v": np.zeros(0, np.float32),
    }
    specs = [TensorSpec(k, np.shape(v)) for k, v in t.items()]
    body = encode_update(t, encoding)
    back = decode_update(body, encoding)
    assert {k: v.shape for k, v in back.items()} == {k: np.shape(v) for k, v in t.items()}
    assert len(body) <= max_encoded_size(specs, encoding)


def test_unknown_encoding():
    with pytest.raises(ValueError, match="use one of"):
        encode_update({}, "bf16")
    with pytest.raises(MalformedMessage):
        decode_update(encode_update({}, "fp32"), "bf16")


_name = st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True).filter(is_tensor_name)
_shape = st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple)


@settings(max_examples=150, deadline=None)
@given(
    specs=st.dictionaries(_name, _shape, max_size=8),
    encoding=st.sampled_from(ENCODINGS),
    seed=st.integers(0, 2**32 - 1),
)
def test_size_bound_holds_for_random_specs(specs, encoding, seed):
    specs = [TensorSpec(n, s) for n, s in specs.items()]
    tensors = _random_tensors(np.random.default_rng(seed), specs)
    size = len(encode_update(tensors, encoding))
    bound = max_encoded_size(specs, encoding)
    assert size <= bound
    slack_per_tensor = 16 if encoding == "int8" else 8  # digits of offsets + padding; int8 has 2 entries
    assert bound - size <= 8 + slack_per_tensor * len(specs) + 7 + 1


def test_size_bound_for_a_real_plan():
    plan = AdapterPlan(depth=2, ranks=(4, 8), mask_density=0.25, targets="qv+ffn")
    dims = ModelDims(num_layers=6, hidden=384, intermediate=1536, num_labels=2)
    start = init_trainable(plan, dims, seed=0)
    rng = np.random.default_rng(0)
    trained = {k: v + rng.standard_normal(v.shape).astype(np.float32) * 0.01 for k, v in start.items()}
    mask = mask_from_rows(plan, dims, {})  # no rows: B updates are empty
    mask[::4] = 1.0
    upd = gather_update(plan, dims, start, trained, mask)
    specs = masked_update_layout(plan, dims, mask)
    for enc in ENCODINGS:
        body = encode_update(upd, enc)
        assert len(body) <= max_encoded_size(specs, enc) <= len(body) + 16 * len(specs) + 16
        assert validate_update(decode_update(body, enc), specs, norm_bound=1e3) == []


def test_validate_update_reports_every_problem():
    specs = [TensorSpec("a", (2, 2)), TensorSpec("b", (3,)), TensorSpec("c", (1,)), TensorSpec("d", (2,))]
    tensors = {
        "a": np.ones((2, 3), np.float32),
        "b": np.ones(3, np.float64),
        "c": np.array([np.nan], np.float32),
        "x": np.ones(1, np.float32),
    }
    codes = sorted(r.reason_code for r in validate_update(tensors, specs, norm_bound=1.0))
    assert codes == ["bad_dtype", "bad_shape", "missing_tensor", "non_finite", "unexpected_tensor"]
    assert all(isinstance(r, Rejection) and r.detail for r in validate_update(tensors, specs))


def test_validate_update_norm_bound():
    specs = [TensorSpec("a", (2,))]
    assert validate_update({"a": np.array([3.0, 4.0], np.float32)}, specs, norm_bound=5.0) == []
    (rej,) = validate_update({"a": np.array([3.0, 4.1], np.float32)}, specs, norm_bound=5.0)
    assert rej.reason_code == "norm_exceeded" and "5" in rej.detail
    assert validate_update({"a": np.array([3.0, 4.1], np.float32)}, specs) == []
