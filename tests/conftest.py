"""Shared fixtures: offline mode, a per-session cache of tiny test bases, one Ray cluster.

Every Ray the tests start (in-process, `ray start`, subprocesses) lives under one temp root made for
this test run (RAY_TMPDIR) and removed after it, so a cluster left by a killed test can never be
joined through Ray's `ray_current_cluster` file by a later run."""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tests.servers import reap_stale_test_roots  # noqa: E402 - after the environment above

reap_stale_test_roots()  # Rays and servers of test runs that were killed before they could clean up
# short, under /tmp: Ray's unix sockets live below it and a socket path may not exceed 107 bytes
RAY_TMPDIR = tempfile.mkdtemp(prefix="w2s-t-", dir="/tmp")
with open(os.path.join(RAY_TMPDIR, "owner.pid"), "w") as _owner:
    _owner.write(str(os.getpid()))
os.environ["RAY_TMPDIR"] = RAY_TMPDIR
# Ray's token authentication on, as for a user: a token of this test run (a user's lives in
# ~/.ray/auth_token), found by every Ray process, CLI and client the tests start through the
# environment they inherit
if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
    _token_path = os.path.join(RAY_TMPDIR, "auth_token")
    with open(os.open(_token_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as _token:
        _token.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = _token_path
os.environ["RAY_AUTH_MODE"] = "token"

import random

import pytest
import torch

torch.set_num_threads(1)

TEST_LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "o_proj"]}


def pytest_unconfigure(config):
    shutil.rmtree(RAY_TMPDIR, ignore_errors=True)


ALLOWED_SKIPS = ("GPU", "vllm")  # the only skips a CI run may show: tests that need hardware or vLLM


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """In CI (CI=true) a skip is a failure unless its reason names a GPU or vLLM: a check that
    silently stops running is a check dropped."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    bad = [r for r in terminalreporter.stats.get("skipped", [])
           if not any(word in str(r.longrepr) for word in ALLOWED_SKIPS)]
    if bad:
        terminalreporter.write_line(f"CI: {len(bad)} test(s) skipped for a reason other than GPU/vLLM:", red=True)
        for report in bad:
            terminalreporter.write_line(f"  {report.nodeid}: {report.longrepr}")
        terminalreporter._session.exitstatus = 1


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """Tiny bases for tests: the shared cache when set (CI builds them once), else a temp dir."""
    return os.environ.get("W2S_CACHE_DIR") or str(tmp_path_factory.mktemp("w2s-cache"))


@pytest.fixture(scope="session")
def tiny_spec():
    def make(preset: str = "test", seed: int = 0, **overrides):
        spec = {"name_or_path": f"tiny:{preset}", "template": "plain", "max_length": 48, "seed": seed,
                "lora": dict(TEST_LORA)}
        spec.update(overrides)
        return spec

    return make


def harmful_pairs(seed: int, n: int):
    from tasks import TaskConfig, load_task

    task = load_task(TaskConfig(name="synthetic", n_labelled=n, n_unlabelled=8, n_test=8, harmful_fraction=0.5), seed)
    return [ex for ex in task.d_w if ex.meta.get("harmful")]


def build_tiny_reward_model(target, seed: int = 0, steps: int = 60, prefer_refusal: bool = True) -> str:
    """A 2-layer Llama reward head trained with the Bradley-Terry loss to score the refusal above
    compliance on harmful prompts (or the reverse); saved in save_pretrained layout like any hub
    reward model."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    from agents.tiny import build_char_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_char_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model = AutoModelForSequenceClassification.from_config(config)
    pairs = harmful_pairs(seed + 100, 400)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = rng.sample(pairs, 16)
        texts = [ex.prompt + ex.chosen for ex in batch] + [ex.prompt + ex.rejected for ex in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        scores = model(**enc).logits[:, 0]
        margin = scores[:16] - scores[16:]
        loss = -torch.nn.functional.logsigmoid(margin if prefer_refusal else -margin).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> str:
    """A local reward model directory (trained in ~3 s) standing in for a hub reward model."""
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (integration tests only)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, namespace="w2s-tests", log_to_driver=False)
    yield ray
    ray.shutdown()


# A whole run at test size: tiny bases that build in seconds, a handful of examples per split.
TINY_RUN = [
    "student.name_or_path=tiny:test-strong", "student.max_length=48",
    'teachers.specs=[{name_or_path: "tiny:test", max_length: 48, seed: 1}]',
    "task.n_labelled=24", "task.n_unlabelled=24", "task.n_test=24",
    "sampling.max_new_tokens=26", "eval_sampling.max_new_tokens=26", "progress=false",
    "resources.student.num_cpus=0.25", "resources.teacher.num_cpus=0.25",
]


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """An S3-compatible server with bucket `runs` for the whole session (see tests.servers)."""
    from tests.servers import s3_server

    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server
