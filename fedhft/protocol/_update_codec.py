"""Compact encoding of a client update (pure numpy + safetensors, no torch).

An update is a dict of float32 tensors (``fedhft.layout.gather_update``: trained - start, each
``lora_B`` reduced to its masked rows). On the wire it is one safetensors blob:

* ``fp32``: each tensor as float32 (lossless);
* ``fp16``: each tensor as float16: relative error <= 2**-11 for ``|x| >= 2**-14``, absolute
  error <= 2**-25 below that; values beyond +-65504 become +-inf (and the server rejects them);
* ``int8``: symmetric quantization with one float32 scale per row (first axis; a 1-D or 0-D
  tensor has one scale): ``name`` holds int8 ``q = round(x / s)`` in [-127, 127] and
  ``name.__scale`` holds ``s = max|row| / 127``. Dequantized ``q * s`` is within ``s / 2`` of
  ``x`` per element (up to float32 rounding of the product).

The encoding is deterministic (safetensors sorts its entries), so the sha256 of the blob is the
update's identity: a retry re-sends the same bytes and the server dedupes on
(client, round, digest).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from fedhft.layout import TensorSpec
from fedhft.protocol._codes import Reason
from fedhft.protocol._envelope import sha256_hex
from fedhft.protocol._errors import MalformedMessage

ENCODINGS = ("fp32", "fp16", "int8")
SCALE_SUFFIX = ".__scale"
#: Tensor names on the wire: the canonical layout names (dotted), bounded, no JSON escapes needed.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: dtypes any tensor body may carry, safetensors code -> numpy dtype.
WIRE_DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "I64": np.int64}
_ITEMSIZE = {"fp32": 4, "fp16": 2, "int8": 1}
_ST_CODE = {"fp32": "F32", "fp16": "F16", "int8": "I8"}
INT8_MAX = 127


@dataclass(frozen=True)
class Rejection:
    """Why the server will not aggregate an update (a value, not an exception: it is recorded)."""

    reason_code: Reason
    detail: str


def is_tensor_name(name: object) -> bool:
    """A name a tensor may carry on the wire ('__' prefixes and the scale suffix are reserved)."""
    return (
        type(name) is str
        and NAME_PATTERN.fullmatch(name) is not None
        and not name.startswith("__")
        and not name.endswith(SCALE_SUFFIX)
    )


def check_tensor_name(name: object) -> str:
    if not is_tensor_name(name):
        raise ValueError(
            f"tensor name {name!r} is not allowed on the wire: use 1-128 characters from A-Z a-z 0-9 _ . : - "
            f"not starting with '__' and not ending in {SCALE_SUFFIX!r} (both reserved)"
        )
    return name  # type: ignore[return-value]


def _check_encoding(encoding: object) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown update encoding {encoding!r}: use one of {list(ENCODINGS)}")
    return encoding  # type: ignore[return-value]


def _contiguous(value: object, dtype: type | None = None) -> np.ndarray:
    """C-contiguous array for safetensors; unlike np.ascontiguousarray it keeps 0-D tensors 0-D."""
    return np.array(value, dtype=dtype, order="C", copy=None)


def _as_rows(x: np.ndarray) -> np.ndarray:
    """2-D view [rows, rest]: the first axis is the row axis; 0-D/1-D tensors are one row."""
    if x.ndim >= 2:
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))
    return x.reshape(1, x.size)


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: returns (q int8 with x's shape, scales float32 of shape [rows] or [1])."""
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(
            "cannot int8-quantize non-finite values: local training diverged; report an error outcome instead"
        )
    rows = _as_rows(x)
    absmax = np.max(np.abs(rows), axis=1) if rows.shape[1] else np.zeros(rows.shape[0], np.float32)
    scale = (absmax / np.float32(INT8_MAX)).astype(np.float32)
    # Divide in float64 by the float32 scale actually stored, so the s/2 bound holds for what is sent.
    safe = np.where(scale > 0, scale, 1.0).astype(np.float64)
    q = np.clip(np.rint(rows.astype(np.float64) / safe[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q.reshape(x.shape), scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    rows = _as_rows(q)
    return (rows.astype(np.float32) * scale.astype(np.float32)[:, None]).reshape(q.shape)


def _scale_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0],) if len(shape) >= 2 else (1,)


def encode_update(tensors: Mapping[str, np.ndarray], encoding: str) -> bytes:
    """Deterministic safetensors blob of ``tensors`` (float32 deltas) in ``encoding``."""
    _check_encoding(encoding)
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        check_tensor_name(name)
        x = _contiguous(value, np.float32)
        if encoding == "fp32":
            out[name] = x
        elif encoding == "fp16":
            with np.errstate(over="ignore"):  # overflow -> inf is documented; the server rejects it
                out[name] = x.astype(np.float16)
        else:
            q, scale = quantize_int8(x)
            out[name], out[name + SCALE_SUFFIX] = _contiguous(q), scale
    return _st_save(out)


def load_tensors(body: bytes, what: str) -> dict[str, np.ndarray]:
    """safetensors bytes -> arrays, with whitelisted dtypes only. Raises MalformedMessage on anything else."""
    try:
        loaded = _st_load(bytes(body))
    except Exception as e:  # safetensors raises its own SafetensorError and others on hostile input
        raise MalformedMessage(f"{what} body is not a valid safetensors blob: {str(e)[:200]}") from None
    allowed = tuple(np.dtype(d) for d in WIRE_DTYPES.values())
    for name, arr in loaded.items():
        if arr.dtype not in allowed:
            raise MalformedMessage(
                f"{what} tensor {name!r} has dtype {arr.dtype}; allowed: float32, float16, int8, int64",
                code=Reason.BAD_DTYPE,
            )
    return loaded


def _expect_dtype(name: str, arr: np.ndarray, dtype: type, encoding: str) -> None:
    if arr.dtype != np.dtype(dtype):
        raise MalformedMessage(
            f"update tensor {name!r} is {arr.dtype} but encoding {encoding!r} needs {np.dtype(dtype)}",
            code=Reason.BAD_DTYPE,
        )


def decode_update(body: bytes, encoding: str) -> dict[str, np.ndarray]:
    """Inverse of ``encode_update``: float32 tensors. Raises MalformedMessage on any structural problem."""
    if encoding not in ENCODINGS:
        raise MalformedMessage(f"unknown update encoding {encoding!r}: expected one of {list(ENCODINGS)}")
    raw = load_tensors(body, "update")
    out: dict[str, np.ndarray] = {}
    for name in sorted(raw):
        if name.endswith(SCALE_SUFFIX):
            base = name[: -len(SCALE_SUFFIX)]
            if encoding != "int8" or base not in raw:
                raise MalformedMessage(f"update has a stray scale tensor {name!r} (no int8 tensor {base!r})")
            continue
        if not is_tensor_name(name):
            raise MalformedMessage(f"update tensor name {name!r} is not a valid tensor name")
        arr = raw[name]
        if encoding == "int8":
            _expect_dtype(name, arr, np.int8, encoding)
            scale = raw.get(name + SCALE_SUFFIX)
            if scale is None or scale.dtype != np.float32 or scale.shape != _scale_shape(arr.shape):
                raise MalformedMessage(
                    f"int8 tensor {name!r} needs a float32 scale {name + SCALE_SUFFIX!r} of shape "
                    f"{_scale_shape(arr.shape)}"
                )
            out[name] = dequantize_int8(arr, scale)
        else:
            _expect_dtype(name, arr, np.float32 if encoding == "fp32" else np.float16, encoding)
            out[name] = arr.astype(np.float32)
    return out


def update_digest(body: bytes) -> str:
    """The update's identity: sha256 (hex) of its encoded blob."""
    return sha256_hex(body)


def _safetensors_entry_bound(name: str, shape: tuple[int, ...], offset_digits: int) -> int:
    # '"<name>":{"dtype":"XXX","shape":[d0,d1],"data_offsets":[a,b]},' with a, b < 10**offset_digits.
    shape_text = ",".join(str(int(d)) for d in shape)
    return (
        len(name)
        + 2
        + len(':{"dtype":"XXX","shape":[')
        + len(shape_text)
        + len('],"data_offsets":[')
        + 2 * offset_digits
        + len(",]},")
    )


def max_encoded_size(specs: Iterable[TensorSpec], encoding: str) -> int:
    """Upper bound (bytes) of ``encode_update`` for tensors of these specs, exact to within ~8 bytes per tensor.

    Derivation: safetensors = 8-byte length + JSON header padded to a multiple of 8 + raw data.
    Each header entry is bounded by ``_safetensors_entry_bound`` (dtype codes are <= 3 chars,
    offsets <= total data bytes); int8 adds one float32 scale tensor per tensor.
    """
    _check_encoding(encoding)
    entries: list[tuple[str, tuple[int, ...]]] = []
    data = 0
    for spec in specs:
        shape = tuple(int(d) for d in spec.shape)
        data += math.prod(shape) * _ITEMSIZE[encoding]
        entries.append((spec.name, shape))
        if encoding == "int8":
            scale_shape = _scale_shape(shape)
            data += 4 * scale_shape[0]
            entries.append((spec.name + SCALE_SUFFIX, scale_shape))
    digits = len(str(data))
    header = 2 + sum(_safetensors_entry_bound(n, s, digits) for n, s in entries)
    return 8 + header + 7 + data  # + 7: padding of the header to 8-byte alignment


def validate_update(
    tensors: Mapping[str, np.ndarray], expected_specs: Iterable[TensorSpec], norm_bound: float | None = None
) -> list[Rejection]:
    """Every reason to refuse this (decoded, float32) update; empty list = acceptable.

    Checks names (missing/unexpected), shapes, dtypes, finiteness and the global L2 norm.
    """
    expected = {s.name: s for s in expected_specs}
    problems = [
        Rejection(Reason.MISSING_TENSOR, f"update lacks tensor {n!r} of the client's plan")
        for n in expected
        if n not in tensors
    ]
    problems += [
        Rejection(Reason.UNEXPECTED_TENSOR, f"tensor {n!r} is not in the client's plan")
        for n in tensors
        if n not in expected
    ]
    sq = 0.0
    for name, spec in expected.items():
        if name not in tensors:
            continue
        arr = np.asarray(tensors[name])
        if tuple(arr.shape) != tuple(spec.shape):
            problems.append(
                Rejection(Reason.BAD_SHAPE, f"{name!r} has shape {list(arr.shape)}, the plan needs {list(spec.shape)}")
            )
            continue
        if arr.dtype != np.dtype(spec.dtype):
            problems.append(Rejection(Reason.BAD_DTYPE, f"{name!r} has dtype {arr.dtype}, the plan needs {spec.dtype}"))
            continue
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            problems.append(Rejection(Reason.NON_FINITE, f"{name!r} has {bad} NaN/inf value(s)"))
            continue
        sq += float(np.sum(np.square(arr, dtype=np.float64)))
    if norm_bound is not None and not problems and math.sqrt(sq) > norm_bound:
        problems.append(
            Rejection(Reason.NORM_EXCEEDED, f"update L2 norm {math.sqrt(sq):.4g} exceeds the bound {norm_bound:.4g}")
        )
    return problems


__all__ = [
    "ENCODINGS",
    "Rejection",
    "SCALE_SUFFIX",
    "WIRE_DTYPES",
    "decode_update",
    "dequantize_int8",
    "encode_update",
    "load_tensors",
    "max_encoded_size",
    "quantize_int8",
    "update_digest",
    "validate_update",
]
