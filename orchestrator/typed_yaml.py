"""YAML and dotted overrides -> typed dataclasses, naming the key of anything wrong.

Generic: it knows dataclasses and type hints, not runs. Every key is known in advance, so a typo or
a wrong type fails at once with one line naming the key (`train.student_sft.lr='fast': expected a
number`), instead of hours later on a cluster.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import BadInput


class ConfigError(BadInput, ValueError):
    """A bad configuration value; the message names the key and the value."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def convert_value(value: Any, tp: Any, key: str) -> Any:
    """Check/convert `value` to the annotated type `tp`, naming `key` on failure."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert_value(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, key)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return [convert_value(v, item_type, f"{key}.{i}") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r}: expected a string")
    return value


def _merged(base: dict, over: dict) -> dict:
    """`over` on top of `base`, mappings merged key by key (lists and values replaced)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def from_mapping(cls: type, data: dict, prefix: str = "") -> Any:
    """`cls` from a mapping. A partial mapping for a dataclass field fills the rest from that field's
    own default (e.g. `train.wspo: {lr: 1e-3}` keeps WSPO's epochs, batch and gamma), not from the
    nested class's generic defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {prefix + '.' if prefix else ''}{close[0]}? " if close else ""
            raise ConfigError(f"{full}: unknown key ({hint}valid keys: {', '.join(sorted(fields))})")
        factory = fields[key].default_factory
        if isinstance(value, dict) and factory is not dataclasses.MISSING:
            default = factory()
            if dataclasses.is_dataclass(default):
                value = _merged(dataclasses.asdict(default), value)
        kwargs[key] = convert_value(value, hints[key], full)
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.0.c` in nested mappings and lists; a key under a plain value, an index beyond a
    list or a name where a list needs an index is one line naming the key."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if isinstance(node, list):
            if not part.isdigit():
                raise ConfigError(f"{dotted}: {where} is a list; give an index (0 to {len(node) - 1}), not {part!r}")
            if int(part) >= len(node):
                raise ConfigError(f"{dotted}: {where} has {len(node)} entries (index 0 to {len(node) - 1}), not {part}")
            if i == len(parts) - 1:
                node[int(part)] = value
                return
            node = node[int(part)]
        elif isinstance(node, dict):
            if i == len(parts) - 1:
                node[part] = value
                return
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"{dotted}: {where}={node!r} is a value, not a mapping; it has no key {part!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", YAML-parsed value): `1` -> 1, `false` -> False, `[a, b]` -> list."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """A YAML file's top-level mapping; a missing file or bad YAML is one line naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:  # an empty file is a mistake (a truncated copy), not a request for the defaults
        raise ConfigError(f"config file {path} is empty; give at least one key (the defaults: configs/default.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def read_composed(path: str | os.PathLike, chain: tuple[Path, ...] = ()) -> dict:
    """A config file with its `defaults`: a list of config files (relative to it) merged in order,
    then the file's own keys on top (mappings key by key, lists and values replaced), as Hydra's
    defaults list composes a config. One line for a missing file or a cycle."""
    path = Path(path)
    data = read_yaml_mapping(path)
    defaults = data.pop("defaults", [])
    if not isinstance(defaults, list) or not all(isinstance(d, str) and d for d in defaults):
        raise ConfigError(f"config file {path}: defaults must be a list of config files (relative to it), got {defaults!r}")
    here = path.resolve()
    if here in chain:
        raise ConfigError(f"config file {path}: defaults form a cycle ({' -> '.join(p.name for p in (*chain, here))})")
    merged: dict = {}
    for name in defaults:
        base = path.parent / name
        if not base.is_file():
            raise ConfigError(f"config file {path}: defaults entry {name!r} not found (looked for {base})")
        merged = _merged(merged, read_composed(base, (*chain, here)))
    return _merged(merged, data)


_MISSING = object()
_REFERENCE = re.compile(r"\$\{([^${}]+)\}")


def _get_dotted(data: Any, dotted: str) -> Any:
    """The value at `a.b.0.c`, or _MISSING."""
    node = data
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def apply_override(data: dict, text: str) -> None:
    """One command-line override, in Hydra's grammar: `key=value` sets, `+key=value` adds a key the
    config does not set yet (refused if it does), `++key=value` sets either way, `~key` removes a
    key so that its default applies again."""
    if text.startswith("~"):
        key = text[1:].split("=", 1)[0].strip()
        *parents, leaf = key.split(".")
        parent = _get_dotted(data, ".".join(parents)) if parents else data
        if not key or not isinstance(parent, dict) or leaf not in parent:
            raise ConfigError(f"override {text!r}: {key or '(empty)'} is not set in this config, nothing to remove")
        del parent[leaf]
        return
    add = text.startswith("+") and not text.startswith("++")
    key, value = parse_override(text.lstrip("+"))
    if add and _get_dotted(data, key) is not _MISSING:
        raise ConfigError(f"override {text!r}: {key} is already set in this config; change it with {key}=... "
                          f"(or ++{key}=... to set it either way)")
    _set_dotted(data, key, value)


def resolve_interpolations(data: Any) -> Any:
    """`${a.b}` references to other keys of the same config, resolved (OmegaConf's syntax): a value
    that is only a reference takes the referenced value with its type, a reference inside a string
    is replaced by its text. A reference to a key the config does not set, or a cycle, is one line."""
    def resolve(value: Any, where: str, seen: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, f"{where}.{k}" if where else str(k), seen) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, f"{where}.{i}", seen) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def lookup(ref: str) -> Any:
            ref, chain = ref.strip(), seen or (where,)
            if ref in chain:
                raise ConfigError(f"{chain[0]}: interpolation cycle ({' -> '.join((*chain, ref))})")
            target = _get_dotted(data, ref)
            if target is _MISSING:
                raise ConfigError(f"{where}={value!r}: ${{{ref}}} refers to a key this config does not set")
            return resolve(target, ref, (*chain, ref))

        whole = _REFERENCE.fullmatch(value)
        if whole:
            return lookup(whole.group(1))
        return _REFERENCE.sub(lambda m: str(lookup(m.group(1))), value)

    return resolve(data, "", ())


def build(cls: type, data: dict, overrides: typing.Sequence[str] = ()) -> Any:
    """`cls` built from `data` after applying overrides (`key=value`, `+key=value`, `++key=value`,
    `~key`) and resolving `${key}` interpolations."""
    for text in overrides:
        apply_override(data, text)
    return from_mapping(cls, resolve_interpolations(data))
