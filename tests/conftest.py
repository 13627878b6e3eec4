"""Shared fixtures: a tiny BERT built from scratch and small, learnable datasets.

Nothing is downloaded: the model is a 2-layer, 32-wide BERT with a WordPiece vocab
of a few dozen words, saved the way a Hub checkpoint would be.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

# The job uses the standard Hugging Face caches and the token `hf auth login` stored: the
# suite gets a Hugging Face home of its own, set before anything imports huggingface_hub or
# datasets (they read it at import), so that no test reads the developer's token or cache,
# nor writes into them. The tests started as subprocesses inherit it.
for _variable in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_TOKEN_PATH", "HF_XET_CACHE", "HF_ASSETS_CACHE"):
    os.environ.pop(_variable, None)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="ftjob-tests-hf-home-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)

# A suite started in the background (`cmd &` in a script, nohup) inherits SIGINT ignored, and
# so would every job it starts, which rightly keeps it so: the tests' jobs get SIGINT as they
# would from a terminal (a handled signal is reset to its default in the child at exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from job.settings import Settings  # noqa: E402

POSITIVE = ["great", "wonderful", "superb", "delightful", "brilliant", "moving"]
NEGATIVE = ["awful", "boring", "dreadful", "tedious", "clumsy", "bland"]
TOPICS = {
    "sports": ["goal", "match", "team", "coach"],
    "politics": ["vote", "senate", "policy", "election"],
    "tech": ["software", "chip", "robot", "server"],
}
FILLER = ["the", "film", "was", "a", "and", "story", "it", "of", "this", "really", "quite", "plot", "cast", "is"]
VOCAB = sorted({*POSITIVE, *NEGATIVE, *FILLER, *(w for ws in TOPICS.values() for w in ws), "yes", "no"})


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB]) + "\n")
    # `vocab=` (not `vocab_file=`, which is silently ignored) reads the file.
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), model_max_length=64)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def wide_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model with a 30k-row embedding table: weights of ~8 MiB, enough for
    multipart uploads with 5 MiB parts."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("wide-bert")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, folder / name)
    config = BertConfig(
        vocab_size=30000, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def sentence(rng: random.Random, *keywords: str, length: tuple[int, int] = (4, 14)) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(*length))]
    for word in keywords:
        words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def rows(kind: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows whose label follows from keywords, so a tiny model can learn it fast."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if kind == "binary":
            positive = i % 2 == 0
            out.append({"text": sentence(rng, rng.choice(POSITIVE if positive else NEGATIVE)), "label": int(positive)})
        elif kind == "string":
            positive = i % 2 == 0
            word = rng.choice(POSITIVE if positive else NEGATIVE)
            out.append({"review": sentence(rng, word), "sentiment": "pos" if positive else "neg"})
        elif kind == "multiclass":
            topic = list(TOPICS)[i % 3]
            out.append({"text": sentence(rng, rng.choice(TOPICS[topic])), "label": topic})
        elif kind == "pairs":
            topic = list(TOPICS)[i % 3]
            same = i % 2 == 0
            other = topic if same else list(TOPICS)[(i + 1) % 3]
            out.append(
                {
                    "sentence1": sentence(rng, rng.choice(TOPICS[topic])),
                    "sentence2": sentence(rng, rng.choice(TOPICS[other])),
                    "label": int(same),
                }
            )
        elif kind == "multilabel":
            chosen = [t for t in TOPICS if rng.random() < 0.25] or [list(TOPICS)[i % 3]]
            out.append({"text": sentence(rng, *(rng.choice(TOPICS[t]) for t in chosen)), "label": chosen})
        elif kind == "regression":
            good, bad = rng.randint(0, 3), rng.randint(0, 3)
            words = [rng.choice(POSITIVE) for _ in range(good)] + [rng.choice(NEGATIVE) for _ in range(bad)]
            out.append({"text": sentence(rng, *words), "label": float(good - bad)})
        else:
            raise ValueError(kind)
    return out


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write records as csv, jsonl or parquet, by the file's extension."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(records)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix in (".jsonl", ".json"):
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(path)
    return path


def kernel_cpu_flags() -> set[str]:
    """The CPU's feature flags as the Linux kernel reports them: what tests expect the
    job's hardware policy to find, read independently of it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}


def cpu_bf16_expected() -> bool:
    """Whether `auto` should pick bf16 on this CPU: it has AVX512-BF16 instructions."""
    return "avx512_bf16" in kernel_cpu_flags()


def score_tolerance(*precisions: str) -> float:
    """How far a score may move between two scorings of one model: batch composition
    alone moves fp32 scores by ~1e-5; bf16 autocast (chosen on GPUs and on CPUs with
    bf16 instructions) rounds each matmul's inputs to 8 bits of mantissa."""
    return 1e-4 if all(p == "no" for p in precisions) else 1e-2


PINNED_SCHEDULE = {"FT_EPOCHS": "3", "FT_BATCH_SIZE": "32", "FT_LEARNING_RATE": "5e-5"}


def ft_env(root: Path, model: Path | str, dataset: Path | str | None = None, **variables: str) -> dict[str, str]:
    """The settings of a CLI run of `model` on `dataset`, its output and cache under `root`,
    logging JSON; keyword arguments set further variables (FT_RUN_ID="x") or override these.

    The schedule is pinned (3 epochs of 32 rows at 5e-5) so a test's step counts are its own:
    on the suite's small datasets the job's own defaults (job/defaults.py, tested in
    test_defaults.py) would train up to ten times longer."""
    env = {
        "FT_MODEL": str(model),
        "FT_OUTPUT": str(root / "outputs"),
        "FT_CACHE_DIR": str(root / "cache"),
        "FT_LOG_FORMAT": "json",
        **PINNED_SCHEDULE,
    }
    if dataset is not None:
        env["FT_DATASET"] = str(dataset)
    return {**env, **variables}


def clean_environ(*, keep_aws: bool = False) -> dict[str, str]:
    """This process's environment without FT_*, AWS or token variables, offline, with the suite's
    own Hugging Face home (no stored token in it unless a test puts one there): what a job
    started by a test inherits, so nothing from the developer's shell configures it.
    `keep_aws`: the AWS variables a test's S3 fixture set stay."""
    dropped = ("FT_",) if keep_aws else ("FT_", "AWS_")
    tokens = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k not in tokens}
    return {**inherited, "HF_HUB_OFFLINE": "1"}


def run_cli(
    *command: str, env: dict[str, str], cwd: Path, timeout: float = 300, log_lines: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """`python -m job <command>` in a subprocess, configured by `env` alone (see clean_environ);
    its result and its log events, every line JSON (`log_lines=False`: stdout is not a log,
    e.g. --print-config, and no events are parsed)."""
    result = subprocess.run(
        [sys.executable, "-m", "job", *command],
        env={**clean_environ(), **env},
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if not log_lines:
        return result, []
    events = [json.loads(line) for line in result.stdout.splitlines()]  # fails on any non-JSON line
    return result, events


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No FT_* or token variables from the developer's shell, and no ./.env."""
    for name in list(os.environ):
        tokens = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")
        if name.startswith(("FT_", "AWS_")) or name in (*tokens, "HF_ENDPOINT"):
            monkeypatch.delenv(name)
    # No host AWS config or instance metadata: only what a test sets is in the chain.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture
def make_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path):
    """Settings for a fast run of the tiny model; keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model": str(tiny_model),
            "output": str(tmp_path / "outputs"),
            "cache_dir": tmp_path / "cache",
            "run_id": "test-run",
            "epochs": 4,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "warmup_ratio": 0.0,
            "logging_steps": 5,
            "log_format": "json",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture(scope="session")
def s3_endpoint() -> Any:
    """moto's S3 server on 127.0.0.1: real HTTP, real multipart, no patching of boto3."""
    from moto.server import ThreadedMotoServer
    from s3_helpers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(clean_env: pytest.MonkeyPatch, s3_endpoint: str) -> Any:
    """A boto3 client for the test server; the job finds it through the standard variables."""
    from s3_helpers import ACCESS_KEY, SECRET_KEY, s3_client

    clean_env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    clean_env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    clean_env.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return s3_client(s3_endpoint)


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=name)
    return name
