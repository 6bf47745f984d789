"""Read params.yaml: every knob of the pipeline lives there, grouped by stage."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Any, TypeVar

import yaml

from adaptwin.paths import repo_root

T = TypeVar("T")


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed params.yaml (default: the repository's)."""
    path = Path(path) if path else repo_root() / "params.yaml"
    with open(path) as fh:
        return yaml.safe_load(fh)


def shared_dir(params: dict[str, Any] | None = None) -> Path:
    """The folder holding ``vllm-measurements/`` and ``traces/`` (``paths.shared`` in params.yaml)."""
    from adaptwin.paths import resolve

    params = params or load_params()
    return resolve(params["paths"]["shared"])


def load_profile(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """``profiles/<name>.yaml``: a flat mapping of dotted params.yaml keys to the values that replace them."""
    path = Path(root or repo_root()) / "profiles" / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such profile")
    return yaml.safe_load(path.read_text()) or {}


def with_profile(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with every dotted key of ``overrides`` replaced (the way `dvc exp run
    --set-param` applies a profile), so a profile can be read without running DVC."""
    out = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise KeyError(f"profile key {dotted}: params.yaml has no section {part!r} there")
            node = node[part]
        if key not in node:
            raise KeyError(f"profile key {dotted}: not a params.yaml key")
        node[key] = copy.deepcopy(value)
    return out


def config_from_section(cls: type[T], section: Mapping[str, Any] | None, name: str,
                        error: type[Exception] = ValueError) -> T:
    """Dataclass ``cls`` from a params.yaml section named ``name``, checked against its field types.

    Papermill injects whatever a section holds, so a misspelt knob would otherwise be a silent new variable
    and a wrong type an error deep inside a long run; this names the key (and the value) in one line.
    Lists become tuples where the field is a tuple; numbers keep their YAML type (an int stays an int), so
    what a stage writes from its config does not change. A field's ``metadata["choices"]`` lists its allowed
    values.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    section = dict(section or {})
    for key in section:
        if key not in fields:
            raise error(f"{name}.{key}: unknown key; known: {', '.join(fields)}")
    for key, f in fields.items():
        if key not in section and f.default is MISSING and f.default_factory is MISSING:
            raise error(f"{name}.{key}: missing (it has no default)")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in section.items():
        checked = _checked(value, hints[key])
        choices = fields[key].metadata.get("choices")
        if checked is _BAD or (choices is not None and checked not in choices):
            allowed = f"one of {', '.join(map(str, choices))}" if choices is not None else _shown(hints[key])
            raise error(f"{name}.{key}: {value!r} is not {allowed}")
        values[key] = checked
    return cls(**values)


#: marks a value that does not fit its field's type
_BAD = object()


def _checked(value: Any, hint: Any) -> Any:
    """``value`` fitted to the type ``hint`` (lists to tuples where a tuple is wanted), or `_BAD`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            checked = _checked(value, arg)
            if checked is not _BAD:
                return checked
        return _BAD
    if hint is type(None):
        return value if value is None else _BAD
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _BAD
    if hint is bool:
        return value if isinstance(value, bool) else _BAD
    if hint in (int, float):
        numeric = (int,) if hint is int else (int, float)
        return value if isinstance(value, numeric) and not isinstance(value, bool) else _BAD
    if hint is str:
        return value if isinstance(value, str) else _BAD
    if origin in (tuple, list):
        return _sequence(value, origin, args)
    if (origin or hint) is dict:
        return value if isinstance(value, dict) else _BAD
    raise TypeError(f"config_from_section: unsupported field type {hint!r}")


def _sequence(value: Any, kind: type, args: tuple[Any, ...]) -> Any:
    """A list or tuple ``value`` with every item fitted to ``args`` (``X, ...`` or one type per item)."""
    if not isinstance(value, list | tuple):
        return _BAD
    if len(args) == 2 and args[1] is Ellipsis or kind is list:
        item_types = [args[0] if args else Any] * len(value)
    elif len(args) == len(value):
        item_types = list(args)
    else:
        return _BAD
    items = [_checked(v, t) for v, t in zip(value, item_types, strict=True)]
    return _BAD if any(i is _BAD for i in items) else kind(items)


def _shown(hint: Any) -> str:
    """A type as written in the dataclass (``int | None``, ``tuple[float, float]``)."""
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")
