"""Credentials are masked wherever a config is written, logged or printed, and a resumed run takes
them again from the environment or from overrides, never from disk."""
from __future__ import annotations

import pytest

from orchestrator.config import CONFIG_DIR, ConfigError, config_for_resume, load_config
from orchestrator.redaction import REDACTED, is_secret_key, redact, redact_override, redacted_keys, redacted_secrets


@pytest.mark.parametrize("key", ["key", "secret", "token", "password", "aws_secret_access_key", "aws_access_key_id",
                                 "api_key", "session_token", "client-secret", "PASSWORD"])
def test_credential_keys_are_secret(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_new_tokens", "score_token_budget", "keep_best", "truncated_prompts", "seed",
                                 "endpoint_url", "monkey"])
def test_ordinary_keys_are_not(key):
    assert not is_secret_key(key)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_hold_nothing_that_looks_secret(path):
    data = load_config(path).to_dict()
    assert redacted_secrets(data, redact(data)) == []  # no false positive on a real config


def test_values_and_url_userinfo_are_masked():
    data = load_config(None, ["storage_options={key: AKIA1, secret: s3, client_kwargs: {endpoint_url: 'http://u:p@h:9'}}",
                              "logging.mlflow_tracking_uri=https://bob:hunter2@mlflow.example:5000"]).to_dict()
    masked = redact(data)
    assert masked["storage_options"] == {"key": REDACTED, "secret": REDACTED,
                                         "client_kwargs": {"endpoint_url": f"http://{REDACTED}@h:9"}}
    assert masked["logging"]["mlflow_tracking_uri"] == f"https://{REDACTED}@mlflow.example:5000"
    assert sorted(redacted_keys(masked)) == ["logging.mlflow_tracking_uri", "storage_options.client_kwargs.endpoint_url",
                                             "storage_options.key", "storage_options.secret"]


@pytest.mark.parametrize("override, shown", [
    ("storage_options.secret=abc", f"storage_options.secret={REDACTED}"),
    ("storage_options={key: AKIA1, secret: s3}", f"storage_options={{key: {REDACTED}, secret: {REDACTED}}}"),
    ("logging.mlflow_tracking_uri=http://bob:pw@h:5000", f"logging.mlflow_tracking_uri=http://{REDACTED}@h:5000"),
    ("seed=3", "seed=3"),
    ("storage_options={key: [unclosed", f"storage_options={REDACTED}"),
])
def test_overrides_are_shown_masked(override, shown):
    assert redact_override(override) == shown


def test_a_resumed_run_takes_redacted_values_from_overrides_or_the_credential_chain():
    saved = redact(load_config(None, ["storage_options={key: AKIA1, secret: s3, region_name: eu}",
                                      "logging.mlflow_tracking_uri=http://bob:pw@h:5000"]).to_dict())
    with pytest.raises(ConfigError, match=r"logging.mlflow_tracking_uri was redacted .* give it again"):
        config_for_resume(saved)
    config = config_for_resume(saved, ["logging.mlflow_tracking_uri=http://bob:pw@h:5000"])
    assert config.storage_options == {"region_name": "eu"}  # key and secret: from AWS_* or a profile
    assert config.logging.mlflow_tracking_uri == "http://bob:pw@h:5000"
    given = config_for_resume(saved, ["storage_options.key=AKIA1", "storage_options.secret=s3",
                                      "logging.mlflow_tracking_uri=http://bob:pw@h:5000"])
    assert given.storage_options == {"key": "AKIA1", "secret": "s3", "region_name": "eu"}
    with pytest.raises(ConfigError, match="--resume takes overrides only for values redacted"):
        config_for_resume(saved, ["rounds=5"])
