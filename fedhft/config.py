"""Dataclass configs for every fedhft command: YAML file + ``key=value`` overrides -> a typed config.

A config is a plain (usually frozen) dataclass whose fields carry ``metadata={"help": ...}``
and whose ``__post_init__`` validates values; nested dataclasses are sections::

    cfg = load_config(ServerConfig, "server.yaml", ["rounds=20", "mqtt.port=1884"])
    print(describe(ServerConfig))   # the --help table

Defaults live in the dataclass only (one place). ``load_config`` coerces values to the annotated
types (int, float, bool, str, Path, tuple/list, dict, Optional/unions, Literal, Enum, nested
dataclasses) and reports EVERY problem at once in one ``ConfigError``: unknown keys (with a
did-you-mean), bad types, missing required fields, failed ``__post_init__`` validation.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import enum
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")

_NONE_WORDS = ("null", "none", "~", "")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class ConfigError(ValueError):
    """One or more configuration problems; ``errors`` lists each, with its key and fix.

    The base of every settings error (a package that needs its own name subclasses it, such as
    ``server.ServerConfigError`` and ``fedhft.credentials.FleetConfigError``), so ``except ConfigError``
    catches them all. Given one string, that string is the message and the only error.
    """

    def __init__(self, errors: Sequence[str] | str, source: str = "configuration") -> None:
        if isinstance(errors, str):
            self.errors = [errors]
            super().__init__(errors)
            return
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} problem(s) in {source}:\n{lines}")


class _Cli(str):
    """A value typed on the command line: parsed as YAML unless the field is a string."""


class _Invalid:
    pass


_INVALID = _Invalid()


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from an optional YAML file, then ``key=value`` / ``section.key=value`` overrides."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    if isinstance(overrides, str):
        raise TypeError(
            f"overrides must be a list of 'key=value' strings, got the string {overrides!r}: wrap it in [...]"
        )
    errors: list[str] = []
    data = _read_yaml(yaml_path, errors) if yaml_path is not None else {}
    for item in overrides:
        _apply_override(data, item, errors)
    if errors:  # an unreadable file or unparsable override: the rest would only add noise
        raise ConfigError(errors, str(yaml_path or "overrides"))
    result = _build(cls, data, "", errors)
    if errors or result is _INVALID:
        source = " + ".join(s for s in (str(yaml_path) if yaml_path else "", "overrides" if overrides else "") if s)
        raise ConfigError(errors, source or cls.__name__)
    return result  # type: ignore[return-value]


def _read_yaml(path: str | Path, errors: list[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        errors.append(f"cannot read config file {str(path)!r}: {e.strerror or e}; check the path")
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        errors.append(f"{path} is not valid YAML: {e}")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        errors.append(f"{path} must hold a mapping of key: value at top level, got {type(data).__name__}")
        return {}
    return data


def _apply_override(data: dict[str, Any], item: str, errors: list[str]) -> None:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        errors.append(f"override {item!r} must look like key=value or section.key=value")
        return
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            errors.append(f"override {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            return
        node = child
    node[parts[-1]] = _Cli(value)


def _build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``data``, appending every problem to ``errors``."""
    where = prefix or cls.__name__
    data = _as_data(data)
    if isinstance(data, _Cli) or not isinstance(data, Mapping):
        errors.append(f"{where} is a section: set its fields as {prefix + '.' if prefix else ''}<field>=value")
        return _INVALID
    n_before = len(errors)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            errors.append(_unknown_key(cls, str(key), prefix, list(fields)))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _coerce(_over_default(f, data[name]), hints[name], path, errors)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            sub = _dataclass_in(hints[name])
            if sub is not None and _all_defaulted(sub):
                value = _build(sub, {}, path, errors)
            else:
                errors.append(
                    f"{path} is required: set it ({_type_name(hints[name])}) in the YAML file or as {path}=..."
                )
                continue
        else:
            continue
        if value is not _INVALID:
            kwargs[name] = value
    if len(errors) > n_before:
        return _INVALID
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation failed
        errors.append(f"{where}: {e}")
        return _INVALID


def _as_data(value: Any) -> Any:
    """A dataclass instance as nested dicts (other values unchanged), so it can be merged and re-coerced."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _as_data(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    return value


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping) and not isinstance(value, _Cli):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _over_default(f: dataclasses.Field, value: Any) -> Any:
    """Section values given for a field whose default is a dataclass instance: merge over that
    instance, so setting one key keeps the parent's customised defaults for the others."""
    if not isinstance(value, Mapping) or isinstance(value, _Cli):
        return value
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        try:
            default = f.default_factory()
        except Exception:  # a factory that needs runtime state: fall back to the section's own defaults
            return value
    else:
        return value
    base = _as_data(default)
    return _deep_merge(base, value) if isinstance(base, dict) else value


def close_match(word: str, known: Sequence[str]) -> str | None:
    """The one spelling of ``known`` that ``word`` is probably a typo of (the "did you mean" of every
    unknown key and every unknown command-line option), or None."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(cls: type, key: str, prefix: str, known: list[str]) -> str:
    path = f"{prefix}.{key}" if prefix else key
    close = close_match(key, known)
    hint = f"; did you mean {(prefix + '.' if prefix else '') + close!r}?" if close else ""
    return f"unknown key {path!r} for {cls.__name__}{hint} (known: {', '.join(sorted(known))})"


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_union(tp) and len(args) == 1:
        return _dataclass_in(args[0])
    return None


def _all_defaulted(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
        if f.init
    )


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _coerce(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """``value`` as type ``tp``, or _INVALID after appending an error naming ``path``."""
    try:
        return _convert(value, tp, path, errors)
    except _Mismatch as e:
        shown = repr(str(value) if isinstance(value, _Cli) else value)
        errors.append(f"{path}: expected {_type_name(tp)}, got {shown[:80]}{e.hint}")
        return _INVALID


class _Mismatch(Exception):
    def __init__(self, hint: str = "") -> None:
        super().__init__(hint)
        self.hint = hint


def _parse_cli(value: Any) -> Any:
    if not isinstance(value, _Cli):
        return value
    try:
        return yaml.safe_load(str(value)) if str(value).strip() else None
    except yaml.YAMLError:
        return str(value)


def _convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return _parse_cli(value)
    if _is_union(tp):
        return _convert_union(value, args, path, errors)
    if origin is typing.Literal:
        raw = _parse_cli(value)
        for choice in args:
            if raw == choice or str(raw) == str(choice):
                return choice
        raise _Mismatch(f" (choose one of {list(args)})")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, errors)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        return _convert_sequence(value, tp, origin or tp, args, path, errors)
    if origin is dict or tp is dict:
        raw = _parse_cli(value)
        if not isinstance(raw, Mapping):
            raise _Mismatch(" (give a mapping, e.g. {a: 1})")
        kt, vt = args or (Any, Any)
        out = {_convert(k, kt, path, errors): _coerce(v, vt, f"{path}.{k}", errors) for k, v in raw.items()}
        return _INVALID if _INVALID in out.values() else out
    return _convert_scalar(value, tp)


def _convert_union(value: Any, args: tuple, path: str, errors: list[str]) -> Any:
    raw = _parse_cli(value)
    if type(None) in args and (raw is None or (isinstance(value, _Cli) and value.strip().lower() in _NONE_WORDS)):
        return None
    candidates = [a for a in args if a is not type(None)]
    if len(candidates) == 1:  # Optional[X]: X's own errors are the useful ones
        return _convert(value, candidates[0], path, errors)
    for arg in candidates:
        trial: list[str] = []
        try:
            result = _convert(value, arg, path, trial)
        except _Mismatch:
            continue
        if not trial and result is not _INVALID:
            return result
    raise _Mismatch()


def _convert_sequence(value: Any, tp: Any, origin: Any, args: tuple, path: str, errors: list[str]) -> Any:
    raw = _parse_cli(value)
    if isinstance(value, _Cli) and isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        raw = [_Cli(p.strip()) for p in str(value).split(",")] if str(value).strip() else []
    if not isinstance(raw, (list, tuple)):
        raise _Mismatch(" (give a list, e.g. [1, 2] or 1,2)")
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(raw) != len(args):
            raise _Mismatch(f" (exactly {len(args)} items)")
        items = [_coerce(v, a, f"{path}[{i}]", errors) for i, (v, a) in enumerate(zip(raw, args))]
    else:
        elem = args[0] if args else Any
        items = [_coerce(v, elem, f"{path}[{i}]", errors) for i, v in enumerate(raw)]
    if any(v is _INVALID for v in items):
        return _INVALID
    return tuple(items) if origin is tuple else list(items)


def _to_bool(value: Any, text: str | None) -> bool:
    if isinstance(value, bool):
        return value
    if text is not None and text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    raise _Mismatch(" (use true or false)")


def _to_int(value: Any, text: str | None) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Mismatch(" (an integer)") from None


def _to_float(value: Any, text: str | None) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Mismatch(" (a number)") from None


def _to_str(value: Any, text: str | None) -> str:
    if isinstance(value, str):
        return str(value)
    raise _Mismatch(" (quote it in YAML to keep it a string)")


_SCALARS = ((bool, _to_bool), (int, _to_int), (float, _to_float), (str, _to_str))


def _convert_scalar(value: Any, tp: Any) -> Any:
    text = str(value).strip() if isinstance(value, (_Cli, str)) else None
    for scalar, convert in _SCALARS:
        if tp is scalar:
            return convert(value, text)
    if tp is Path or (isinstance(tp, type) and issubclass(tp, Path)):
        if isinstance(value, (str, Path)):
            return tp(str(value))
        raise _Mismatch(" (a path)")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _convert_enum(value, tp)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch()


def _convert_enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    if isinstance(value, tp):
        return value
    for member in tp:
        if str(value) in (member.name, str(member.value)):
            return member
    raise _Mismatch(f" (one of {[m.name for m in tp]})")


# ----------------------------------------------------------------------------- help


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    text = str(tp).replace("typing.", "").replace("NoneType", "None")
    for mod in ("pathlib.", "builtins."):
        text = text.replace(mod, "")
    return text


def _field_default(f: dataclasses.Field, parent: Any) -> Any:
    """The effective default of a field: the parent's default section value if there is one."""
    if parent is not None:
        return getattr(parent, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        try:
            return f.default_factory()
        except Exception:  # a factory may need runtime state; the table still renders
            return None
    return dataclasses.MISSING


def _show(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Path):
        return repr(str(value))
    return repr(value)


def _rows(cls: type, prefix: str, parent: Any = None) -> list[tuple[str, str, str, str]]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}{f.name}"
        sub = _dataclass_in(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = _field_default(f, parent)
        if sub is not None:
            rows.append((key, sub.__name__, "(section)", help_text))
            rows += _rows(sub, key + ".", default if dataclasses.is_dataclass(default) else None)
        else:
            shown = "(required)" if default is dataclasses.MISSING else _show(default)
            rows.append((key, _type_name(hints[f.name]), shown, help_text))
    return rows


def setting_types(cls: type) -> dict[str, str]:
    """Every key of ``cls`` as written on a command line (nested sections dotted, the sections
    themselves included) -> its type name ("bool", "int", "section", ...)."""
    return {key: ("section" if default == "(section)" else type_name) for key, type_name, default, _ in _rows(cls, "")}


def describe(cls: type) -> str:
    """A help table of every key of ``cls`` (nested sections dotted): key, type, default, help."""
    rows = [("key", "type", "default", "help")] + _rows(cls, "")
    widths = [min(max(len(r[i]) for r in rows), 40) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[j].ljust(widths[j]) for j in range(3)]
        lines.append("  ".join(cells + [row[3]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths + [4]))
    return "\n".join(lines)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain YAML-safe data (tuples as lists, Paths and Enums as strings), e.g. to log it."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, enum.Enum):
            return value.name
        return value

    return plain(cfg)


__all__ = ["ConfigError", "close_match", "describe", "load_config", "setting_types", "to_dict"]
