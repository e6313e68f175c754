"""`--help-config [PREFIX]`: every config key with its default and the comment written beside its
field in the dataclasses (orchestrator.config, agents.config, tasks.config), so the reference can
never drift from the code."""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any, Iterator

FIELD = re.compile(r"^\s{4}(\w+)\s*:\s*[^=#]+(?:=\s*(?P<default>[^#]*))?(?:#\s*(?P<comment>.*))?$")


def field_comments(cls: type) -> dict[str, str]:
    """Field -> its comment: the trailing `# ...` of its line, after any comment lines just above it."""
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        match = FIELD.match(line)
        if match and not stripped.startswith(("def ", "@")):
            text = " ".join(above + ([match.group("comment").strip()] if match.group("comment") else []))
            comments[match.group(1)] = text
        above = []
    return comments


def entries(cls: type, instance: Any, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted key, default, comment) for every leaf key under `cls`."""
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        value = getattr(instance, field.name)
        if dataclasses.is_dataclass(value) and isinstance(hints.get(field.name), type):
            yield from entries(type(value), value, f"{key}.")
        else:
            yield key, value, comments.get(field.name, "")


def render(prefix: str = "") -> str:
    from orchestrator.config import RunConfig

    lines = [f"{key} = {value!r}" + (f"  # {comment}" if comment else "")
             for key, value, comment in entries(RunConfig, RunConfig()) if key.startswith(prefix)]
    return "\n".join(lines)
