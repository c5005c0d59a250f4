"""Strict validators for header fields, shared by encode (check before sending) and decode.

Each validator is ``f(value, where) -> canonical value`` and raises ``MalformedMessage`` naming
the field (``where``) and what it must be. Booleans are never accepted as numbers (JSON ``true``
is not ``1`` here), floats must be finite, strings are length-bounded.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Any, Callable

from fedhft.protocol._errors import MalformedMessage

Validator = Callable[[Any, str], Any]

#: Fleet and client ids: safe as one MQTT topic level and as a Mosquitto username (no + # / $).
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Task, bundle and tensor ids/names: ids plus '.' and ':' (tensor names are dotted).
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
HEX64 = re.compile(r"[0-9a-f]{64}")
INT_MAX = 2**63 - 1
MAX_TEXT = 4096


def _fail(where: str, need: str, value: Any) -> MalformedMessage:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return MalformedMessage(f"{where} must be {need}, got {shown}")


def int_(lo: int = 0, hi: int = INT_MAX) -> Validator:
    def check(value: Any, where: str) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise _fail(where, f"an integer in [{lo}, {hi}]", value)
        return value

    return check


def float_(lo: float = -math.inf, hi: float = math.inf) -> Validator:
    def check(value: Any, where: str) -> float:
        # JSON writers in other languages may write 1 for 1.0: accept ints, never bools.
        if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
            raise _fail(where, f"a finite number in [{lo}, {hi}]", value)
        return float(value)

    return check


def str_(max_len: int = MAX_TEXT, pattern: re.Pattern[str] | None = None) -> Validator:
    def check(value: Any, where: str) -> str:
        if type(value) is not str or len(value) > max_len:
            raise _fail(where, f"a string of at most {max_len} characters", value)
        if pattern is not None and not pattern.fullmatch(value):
            raise _fail(where, f"a string matching {pattern.pattern}", value)
        return value

    return check


def enum(choices: tuple[str, ...] | type[StrEnum]) -> Validator:
    """One of ``choices``; given a ``StrEnum``, the value read is its member (the wire carries its string)."""
    allowed = tuple(str(c) for c in choices)

    def check(value: Any, where: str) -> str:
        if type(value) is not str or value not in allowed:
            raise _fail(where, f"one of {list(allowed)}", value)
        return choices(value) if isinstance(choices, type) else value

    return check


def optional(inner: Validator) -> Validator:
    def check(value: Any, where: str) -> Any:
        return None if value is None else inner(value, where)

    return check


def list_(inner: Validator, max_items: int = 4096) -> Validator:
    def check(value: Any, where: str) -> list:
        if isinstance(value, tuple):
            value = list(value)
        if type(value) is not list or len(value) > max_items:
            raise _fail(where, f"a list of at most {max_items} items", value)
        return [inner(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return check


def float_dict(max_items: int = 64) -> Validator:
    """Metrics: short ASCII names (so the header size stays bounded) to finite numbers."""
    key = str_(64, METRIC_KEY)
    num = float_()

    def check(value: Any, where: str) -> dict[str, float]:
        if not isinstance(value, dict) or len(value) > max_items:
            raise _fail(where, f"an object of at most {max_items} name -> number entries", value)
        return {key(k, f"{where} key"): num(v, f"{where}[{k!r}]") for k, v in value.items()}

    return check


def json_object(value: Any, where: str) -> dict[str, Any]:
    """A free-form JSON object (device profile, plan): string keys; size is bounded by the header bound."""
    if not isinstance(value, dict) or not all(type(k) is str for k in value):
        raise _fail(where, "a JSON object with string keys", value)
    return value


IDENT = str_(64, ID_PATTERN)
TOKEN = str_(128, TOKEN_PATTERN)
DIGEST = str_(64, HEX64)
ROUND = int_(0)
TS = float_(0.0)


def check_id(value: Any, what: str) -> str:
    """Validate a fleet/client id; the error says what a valid one looks like."""
    if type(value) is not str or not ID_PATTERN.fullmatch(value):
        raise MalformedMessage(
            f"{what} {value!r} is not a valid id: use 1-64 characters from A-Z a-z 0-9 _ - "
            "(no '/', '+', '#', '$' or spaces, which break MQTT topics and ACLs)"
        )
    return value


def file_path(value: Any, where: str) -> str:
    """A bundle file name: relative POSIX path, no '..', no empty or hidden-escape segments.

    The receiver joins it under its bundle directory, so anything that could escape that
    directory (absolute paths, '..', backslashes) is refused here, once, for every caller.
    """
    if type(value) is not str or not 1 <= len(value) <= 255 or not FILE_PATTERN.fullmatch(value):
        raise _fail(where, "a relative path of 1-255 characters from A-Z a-z 0-9 _ . - /", value)
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _fail(where, "a relative path without empty, '.' or '..' segments", value)
    return value


FILE_PATTERN = re.compile(r"[A-Za-z0-9_.\-/]+")
METRIC_KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
