"""Credentials never leave the process: secret-looking values are masked wherever a config is
saved (a run's config.yaml, a sweep's spec and results), logged (trackers' hyper-parameters) or
printed.

A value is secret when its key looks like a credential (`key`, `secret`, `token`, `password`, ...,
or a name ending in one of them, as s3fs's `key`/`secret`/`token` and botocore's
`aws_secret_access_key`), and any string's URL user-info (`https://user:password@host`) is masked
whatever its key. Masked values read `REDACTED`: a run resumed from its config.yaml takes them again
from the environment's credential chain (AWS_* variables, profiles) or from overrides given to
`--resume` (`orchestrator.main`).
"""
from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "pwd", "credential", "credentials", "auth",
                "signature", "private")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s]+)@")


def is_secret_key(name: object) -> bool:
    """Whether a mapping key names a credential: one of SECRET_WORDS, or ending in `_<word>` /
    `-<word>` (aws_secret_access_key, api_key, session_token); counted words such as
    `max_new_tokens` or `score_token_budget` are not."""
    if not isinstance(name, str):
        return False
    lowered = name.lower().replace("-", "_")
    parts = lowered.split("_")
    return lowered in SECRET_WORDS or parts[-1] in SECRET_WORDS or "secret" in parts or "password" in parts \
        or lowered.endswith("access_key_id")


def redact_text(text: str) -> str:
    """`text` with every URL's user-info masked (`s3://AKIA:xyz@host/b` -> `s3://<redacted>@host/b`)."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)


def redact(value: Any) -> Any:
    """A copy of `value` (mappings, lists, strings) with secret values masked."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "", {}) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_override(override: str) -> str:
    """A `key=value` override as it may be shown: the value masked when the key (or any key inside a
    `{...}` mapping value) names a credential, URL user-info masked anywhere."""
    key, sep, value = override.partition("=")
    if not sep:
        return redact_text(override)
    if is_secret_key(key.rsplit(".", 1)[-1]):
        return f"{key}={REDACTED}"
    if value.lstrip().startswith("{"):
        import yaml

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return f"{key}={REDACTED}"  # unparsable: it may hold anything
        if isinstance(parsed, dict) and redact(parsed) != parsed:
            return f"{key}={yaml.safe_dump(redact(parsed), default_flow_style=True, width=10**6).strip()}"
    return f"{key}={redact_text(value)}"


def redacted_secrets(original: Any, masked: Any) -> list[str]:
    """Dotted keys whose values `redact` changed (what a resumed run must be given again)."""
    if isinstance(original, dict) and isinstance(masked, dict):
        out: list[str] = []
        for key, value in original.items():
            if isinstance(value, dict) and isinstance(masked.get(key), dict):
                out += [f"{key}.{sub}" for sub in redacted_secrets(value, masked[key])]
            elif masked.get(key) != value:
                out.append(str(key))
        return out
    return [] if original == masked else [""]


def redacted_keys(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys of a saved (redacted) mapping whose values hold the redaction mark."""
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in redacted_keys(value, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(data, str) and REDACTED in data:
        return [prefix]
    return []
