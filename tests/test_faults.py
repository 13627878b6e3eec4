"""Faults of the environment and of the input, tried as operators meet them, through the
real entrypoint in real processes: full, read-only and immutable filesystems (tmpfs and
bind mounts in a private mount namespace, where root allows), files where folders should
be, S3 key clashes and empty objects on moto's server, undecodable and unparseable files
of every format, repeated signals, and messages that used to point the wrong way.

Each case asserts the exit code, the one error line (check and the run give the same one
where both apply), that no case ends in `run.crashed`, and that nothing is marked complete
that is not."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_environ, ft_env, rows, write

from job.errors import ExitCode

pytestmark = pytest.mark.slow

ROOT_ONLY = os.geteuid() == 0 and shutil.which("unshare") is not None
Event = dict[str, Any]


@dataclass
class Setup:
    env: dict[str, str]
    commands: tuple[str, ...] = ("train",)  # each gives the same line and code
    mounts: list[str] = field(default_factory=list)  # shell lines run in a private mount namespace first
    during: Callable[[subprocess.Popen[str], list[Event]], None] | None = None  # acts on the running job
    not_complete: list[Path] = field(default_factory=list)  # run folders that must not be complete


@dataclass
class Case:
    make: Callable[[Path, Path, pytest.FixtureRequest], Setup]
    code: int
    line: str  # a part of the one error line
    root: bool = False  # needs root: mounts, chattr


def run_job(command: str, setup: Setup, cwd: Path) -> tuple[int, list[Event], str]:
    argv = [sys.executable, "-m", "job", *([] if command == "train" else [command])]
    if setup.mounts:
        # The mounts live in the job's own namespace and vanish with it; so does the check of what it left.
        script = " && ".join([*setup.mounts, '"$@"']) + "; code=$?; " + _leftover_check(setup) + "exit $code"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "-", *argv]
    env = {**clean_environ(keep_aws=True), **setup.env}
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[Event] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        events.append(json.loads(line))
        if setup.during is not None:
            setup.during(proc, events)
    stderr = proc.stderr.read() if proc.stderr else ""
    return proc.wait(timeout=600), events, stderr


def _leftover_check(setup: Setup) -> str:
    """Exit 99 when a run folder inside the namespace was left complete or partial."""
    tests = [f'{{ test ! -e "{folder}" || exit 99; }}; ' for folder in setup.not_complete]
    return "".join(tests)


CASES: dict[str, Case] = {}


def case(code: int, line: str, *, root: bool = False) -> Callable[[Callable[..., Setup]], Callable[..., Setup]]:
    def register(make: Callable[..., Setup]) -> Callable[..., Setup]:
        CASES[make.__name__] = Case(make, code, line, root)
        return make

    return register


def base(tmp: Path, model: Path, **extra: str) -> dict[str, str]:
    data = write(tmp / "data" / "train.jsonl", rows("binary", 120, seed=1)).parent
    return ft_env(tmp, model, data, **{"FT_RUN_ID": "r", "FT_EPOCHS": "1", **extra})


STORAGE, DATA, CONFIG = ExitCode.STORAGE, ExitCode.DATA, ExitCode.CONFIG


# --- filesystems ------------------------------------------------------------------------


@case(STORAGE, "FT_CACHE_DIR=", root=False)
def cache_dir_is_a_file(tmp: Path, model: Path, request: Any) -> Setup:
    (tmp / "cache-file").write_text("not a folder")
    env = base(tmp, model, FT_CACHE_DIR=str(tmp / "cache-file"))
    return Setup(env, commands=("check", "train"))


@case(STORAGE, "FT_CACHE_DIR=", root=False)
def cache_dir_below_a_file(tmp: Path, model: Path, request: Any) -> Setup:
    (tmp / "blocker").write_text("not a folder")
    return Setup(base(tmp, model, FT_CACHE_DIR=str(tmp / "blocker" / "cache")), commands=("check", "train", "predict"))


@case(STORAGE, "FT_CACHE_DIR=", root=True)
def cache_dir_read_only(tmp: Path, model: Path, request: Any) -> Setup:
    cache = tmp / "ro-cache"
    cache.mkdir()
    env = base(tmp, model, FT_CACHE_DIR=str(cache))
    return Setup(
        env,
        commands=("check", "train"),
        mounts=[f'mount --bind "{cache}" "{cache}"', f'mount -o remount,bind,ro "{cache}"'],
    )


@case(STORAGE, "FT_OUTPUT=", root=True)
def output_read_only(tmp: Path, model: Path, request: Any) -> Setup:
    out = tmp / "ro-out"
    out.mkdir()
    env = base(tmp, model, FT_OUTPUT=str(out))
    return Setup(
        env, commands=("check", "train"), mounts=[f'mount --bind "{out}" "{out}"', f'mount -o remount,bind,ro "{out}"']
    )


@case(STORAGE, "FT_CHECKPOINT_DIR=", root=True)
def checkpoint_dir_read_only(tmp: Path, model: Path, request: Any) -> Setup:
    saved = tmp / "ro-checkpoints"
    saved.mkdir()
    env = base(tmp, model, FT_CHECKPOINT_DIR=str(saved))
    mounts = [f'mount --bind "{saved}" "{saved}"', f'mount -o remount,bind,ro "{saved}"']
    return Setup(env, commands=("check", "train"), mounts=mounts)


@case(STORAGE, "FT_OUTPUT=", root=True)
def output_immutable(tmp: Path, model: Path, request: Any) -> Setup:
    out = tmp / "immutable"
    out.mkdir()
    subprocess.run(["chattr", "+i", str(out)], check=True)
    request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(out)], check=False))
    return Setup(base(tmp, model, FT_OUTPUT=str(out)), commands=("check", "train", "predict"))


@case(STORAGE, "FT_OUTPUT=", root=True)
def output_disk_fills_while_publishing(tmp: Path, model: Path, request: Any) -> Setup:
    out = tmp / "small-disk"
    out.mkdir()
    env = base(tmp, model, FT_OUTPUT=str(out))
    # 200 KiB: the probe passes, the model (a few hundred KiB with its tokenizer) does not fit.
    return Setup(env, mounts=[f'mount -t tmpfs -o size=200k tmpfs "{out}"'], not_complete=[out / "r"])


@case(STORAGE, "FT_CACHE_DIR=", root=True)
def cache_disk_fills_while_training(tmp: Path, model: Path, request: Any) -> Setup:
    cache = tmp / "filling-cache"
    cache.mkdir()
    env = base(tmp, model, FT_CACHE_DIR=str(cache), FT_EPOCHS="3", FT_BATCH_SIZE="4", FT_SAVE_STEPS="20")

    def fill(proc: subprocess.Popen[str], events: list[Event]) -> None:
        if events[-1]["event"] == "train.started":  # fill the job's own view of its cache disk
            _fill(Path(f"/proc/{proc.pid}/root") / str(cache).lstrip("/") / "filler")

    return Setup(
        env, mounts=[f'mount -t tmpfs -o size=64m tmpfs "{cache}"'], during=fill, not_complete=[tmp / "outputs" / "r"]
    )


def _fill(path: Path) -> None:
    """Write zeros until the disk is full (unbuffered: every byte that fits is written)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * block)
            except OSError:
                continue
    finally:
        os.close(descriptor)


@case(STORAGE, "FT_DATASET=s3://", root=False)
def s3_object_and_prefix_clash(tmp: Path, model: Path, request: Any) -> Setup:
    s3, bucket = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
    s3.put_object(Bucket=bucket, Key="sets/clash/train.csv", Body=b"text,label\na,1\nb,0\n")
    s3.put_object(Bucket=bucket, Key="sets/clash/train.csv/part.csv", Body=b"text,label\na,1\n")
    env = base(tmp, model, FT_DATASET=f"s3://{bucket}/sets/clash")
    return Setup({**_aws(), **env}, commands=("check", "train"))


# --- data decoding ----------------------------------------------------------------------


def _bad_utf8_jsonl(tmp: Path) -> Path:
    folder = tmp / "bad-utf8"
    write(folder / "train.jsonl", rows("binary", 60, seed=1))
    with (folder / "train.jsonl").open("ab") as handle:
        handle.write(b'{"text": "caf\xe9 cr\xe8me", "label": 1}\n')
    return folder


@case(DATA, "train.jsonl is not UTF-8 text (line 61")
def invalid_utf8_inside_jsonl(tmp: Path, model: Path, request: Any) -> Setup:
    return Setup(base(tmp, model, FT_DATASET=str(_bad_utf8_jsonl(tmp))), commands=("check", "train"))


@case(DATA, "train.jsonl is not UTF-8 text (line 61")
def invalid_utf8_inside_jsonl_to_score(tmp: Path, model: Path, request: Any) -> Setup:
    env = base(tmp, request.getfixturevalue("classifier"), FT_DATASET=str(_bad_utf8_jsonl(tmp)))
    return Setup({**env, "FT_OUTPUT": str(tmp / "scores")}, commands=("predict",))


@case(DATA, "train.csv.gz is not UTF-8 text (line 4")
def invalid_utf8_inside_gzipped_csv(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "gz"
    folder.mkdir()
    body = b"text,label\ngreat film,1\nawful film,0\ncaf\xe9 film,1\n" + b"fine film,0\n" * 20
    (folder / "train.csv.gz").write_bytes(gzip.compress(body))
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "train.csv.bz2 is not UTF-8 text (line 2")
def invalid_utf8_inside_bz2_csv(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "bz"
    folder.mkdir()
    (folder / "train.csv.bz2").write_bytes(bz2.compress(b"text,label\n\xff\xfe,1\n" + b"a film,0\n" * 20))
    return Setup(base(tmp, model, FT_DATASET=str(folder)))


@case(DATA, "s3://")
def empty_object_in_s3(tmp: Path, model: Path, request: Any) -> Setup:
    s3, bucket = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
    s3.put_object(Bucket=bucket, Key="sets/empty/train.csv", Body=b"")
    env = base(tmp, model, FT_DATASET=f"s3://{bucket}/sets/empty")
    return Setup({**_aws(), **env}, commands=("check", "train"))


@case(DATA, "train.csv has no rows")
def header_only_csv(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "header"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\n")
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "train.jsonl")
def broken_json_line(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "broken-json"
    write(folder / "train.jsonl", rows("binary", 40, seed=1))
    with (folder / "train.jsonl").open("a") as handle:
        handle.write('{"text": "unterminated, "label": 1\n')
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "train.parquet")
def corrupt_parquet(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "corrupt-parquet"
    folder.mkdir()
    (folder / "train.parquet").write_bytes(b"PAR1" + os.urandom(256))
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "train.csv")
def ragged_csv(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "ragged"
    folder.mkdir()
    lines = ["text,label"] + [f"film {i},{i % 2}" for i in range(30)] + ["a,b,c,d"]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "train.csv.gz")
def truncated_gzip(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "truncated"
    folder.mkdir()
    whole = gzip.compress(("text,label\n" + "a fine film,1\nan awful film,0\n" * 400).encode())
    (folder / "train.csv.gz").write_bytes(whole[: len(whole) // 2])
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "numbers, not text")
def numeric_text_column(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "numeric"
    write(folder / "train.csv", [{"text": i, "label": i % 2} for i in range(40)])
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "numbers, not text")
def numeric_text_to_score(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "numeric-score"
    write(folder / "test.csv", [{"text": i} for i in range(10)])
    env = base(tmp, request.getfixturevalue("classifier"), FT_DATASET=str(folder), FT_OUTPUT=str(tmp / "scores"))
    return Setup(env, commands=("predict",))


# --- messages that point the right way -----------------------------------------------------


@case(DATA, "FT_LABELS")
def labels_setting_filters_away_a_class(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "strings"
    write(
        folder / "train.csv", [{"text": r["text"], "label": "pos" if r["label"] else "neg"} for r in rows("binary", 60)]
    )
    return Setup(base(tmp, model, FT_DATASET=str(folder), FT_LABELS="pos,positive"), commands=("check", "train"))


@case(DATA, "FT_VALIDATION_FRACTION")
def two_rows_with_both_labels(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "two-rows"
    write(folder / "train.csv", [{"text": "a great film", "label": 1}, {"text": "an awful film", "label": 0}])
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(CONFIG, "FT_MODEL=")
def model_is_a_file(tmp: Path, model: Path, request: Any) -> Setup:
    return Setup(base(tmp, model, FT_MODEL=str(model / "config.json")), commands=("check", "train", "predict"))


@case(CONFIG, "no config.json")
def model_folder_without_config(tmp: Path, model: Path, request: Any) -> Setup:
    (tmp / "empty-model").mkdir()
    return Setup(base(tmp, model, FT_MODEL=str(tmp / "empty-model")), commands=("check", "train"))


@case(CONFIG, "FT_OUTPUT='file://' names no folder")
def output_file_scheme_without_a_path(tmp: Path, model: Path, request: Any) -> Setup:
    return Setup(base(tmp, model, FT_OUTPUT="file://"), commands=("check", "train", "predict"))


@case(CONFIG, "FT_DATASET='https://data.example.com/reviews.csv?token=**********'")
def secret_in_an_unsupported_url(tmp: Path, model: Path, request: Any) -> Setup:
    return Setup(base(tmp, model, FT_DATASET="https://data.example.com/reviews.csv?token=planted-0123456789"))


@case(STORAGE, "cannot reach the S3 endpoint")
def endpoint_with_a_password_unreachable(tmp: Path, model: Path, request: Any) -> Setup:
    env = base(tmp, model, FT_OUTPUT="s3://bucket/runs", FT_S3_ENDPOINT_URL="http://user:planted-pw-0123@127.0.0.1:9")
    return Setup(
        {**env, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "FT_S3_MAX_ATTEMPTS": "1"},
        commands=("check", "train"),
    )


@case(STORAGE, "FT_CHECKPOINT_DIR=")
def checkpoint_dir_is_a_file(tmp: Path, model: Path, request: Any) -> Setup:
    (tmp / "checkpoints-file").write_text("not a folder")
    return Setup(base(tmp, model, FT_CHECKPOINT_DIR=str(tmp / "checkpoints-file")), commands=("check", "train"))


@case(STORAGE, "FT_OUTPUT=")
def output_is_a_file(tmp: Path, model: Path, request: Any) -> Setup:
    (tmp / "output-file").write_text("not a folder")
    return Setup(base(tmp, model, FT_OUTPUT=str(tmp / "output-file")), commands=("check", "train", "predict"))


@case(STORAGE, "FT_CACHE_DIR=", root=True)
def cache_disk_full_at_the_start(tmp: Path, model: Path, request: Any) -> Setup:
    cache = tmp / "full-cache"
    cache.mkdir()
    mounts = [
        f'mount -t tmpfs -o size=64k tmpfs "{cache}"',
        f'head -c 1M /dev/zero > "{cache}/filler" 2>/dev/null; true',
    ]
    return Setup(base(tmp, model, FT_CACHE_DIR=str(cache)), commands=("check", "train"), mounts=mounts)


@case(STORAGE, "FT_CHECKPOINT_DIR=", root=True)
def checkpoint_dir_immutable(tmp: Path, model: Path, request: Any) -> Setup:
    saved = tmp / "immutable-checkpoints"
    saved.mkdir()
    subprocess.run(["chattr", "+i", str(saved)], check=True)
    request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(saved)], check=False))
    return Setup(base(tmp, model, FT_CHECKPOINT_DIR=str(saved)), commands=("check", "train"))


@case(STORAGE, "FT_CHECKPOINT_DIR=", root=True)
def checkpoint_disk_fills_at_the_first_save(tmp: Path, model: Path, request: Any) -> Setup:
    saved = tmp / "small-checkpoints"
    saved.mkdir()
    env = base(tmp, model, FT_CHECKPOINT_DIR=str(saved), FT_SAVE_STEPS="3")
    # 64 KiB: the probe passes, a checkpoint (weights, optimizer state) does not fit.
    return Setup(env, mounts=[f'mount -t tmpfs -o size=64k tmpfs "{saved}"'], not_complete=[tmp / "outputs" / "r"])


@case(DATA, "train.json")
def malformed_json_document(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "json"
    folder.mkdir()
    (folder / "train.json").write_text('[{"text": "a fine film", "label": 1}, {"text": ')
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "train.jsonl.xz")
def truncated_xz(tmp: Path, model: Path, request: Any) -> Setup:
    import lzma

    folder = tmp / "xz"
    folder.mkdir()
    whole = lzma.compress("".join(json.dumps(r) + "\n" for r in rows("binary", 300)).encode())
    (folder / "train.jsonl.xz").write_bytes(whole[: len(whole) // 2])
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "train.csv is not UTF-8 text (line 1")
def utf16_csv(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "utf16"
    folder.mkdir()
    (folder / "train.csv").write_bytes(("text,label\n" + "a fine film,1\nan awful film,0\n" * 10).encode("utf-16"))
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "train.jsonl")
def empty_jsonl_file(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "empty-jsonl"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(b"")
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(DATA, "validation.jsonl is not UTF-8 text (line 3")
def invalid_utf8_in_the_validation_file(tmp: Path, model: Path, request: Any) -> Setup:
    folder = tmp / "bad-validation"
    write(folder / "train.jsonl", rows("binary", 60, seed=1))
    write(folder / "validation.jsonl", rows("binary", 2, seed=2))
    with (folder / "validation.jsonl").open("ab") as handle:
        handle.write(b'{"text": "\xff\xfe", "label": 0}\n')
    return Setup(base(tmp, model, FT_DATASET=str(folder)), commands=("check", "train"))


@case(CONFIG, "FT_LABELS=pos lists 1 label")
def labels_setting_with_one_label(tmp: Path, model: Path, request: Any) -> Setup:
    return Setup(base(tmp, model, FT_LABELS="pos"), commands=("check", "train"))


@case(CONFIG, "FT_CHECKPOINT_DIR='file://' names no folder")
def checkpoint_file_scheme_without_a_path(tmp: Path, model: Path, request: Any) -> Setup:
    return Setup(base(tmp, model, FT_CHECKPOINT_DIR="file://"), commands=("check", "train"))


# --- signals ------------------------------------------------------------------------------


def _signal_when(
    event: str, *signals: signal.Signals, after: int = 0
) -> Callable[[subprocess.Popen[str], list[Event]], None]:
    """Send `signals` one at a time: the first when `event` is logged (`after` more events of
    it later), each next one at the next log line (while the stop and its checkpoint happen)."""
    pending = list(signals)
    seen = [0]

    def act(proc: subprocess.Popen[str], events: list[Event]) -> None:
        if not pending:
            return
        if seen[0] <= after:
            if events[-1]["event"] == event:
                seen[0] += 1
            if seen[0] <= after:
                return
        proc.send_signal(pending.pop(0))

    return act


def _long(tmp: Path, model: Path, **extra: str) -> dict[str, str]:
    data = write(tmp / "long" / "train.jsonl", rows("binary", 1200, seed=1)).parent
    return ft_env(
        tmp, model, data, **{"FT_RUN_ID": "r", "FT_EPOCHS": "2", "FT_BATCH_SIZE": "4", "FT_LOGGING_STEPS": "1", **extra}
    )


@case(ExitCode.PREEMPTED, "stopped on request at step")
def sigterm_twice_the_second_while_saving(tmp: Path, model: Path, request: Any) -> Setup:
    during = _signal_when("train.progress", signal.SIGTERM, signal.SIGTERM, after=2)
    return Setup(_long(tmp, model), during=during, not_complete=[tmp / "outputs" / "r"])


@case(ExitCode.PREEMPTED, "stopped on request at step")
def sigterm_three_times_in_a_row(tmp: Path, model: Path, request: Any) -> Setup:
    during = _signal_when("train.progress", signal.SIGTERM, signal.SIGTERM, signal.SIGTERM, after=2)
    return Setup(_long(tmp, model), during=during, not_complete=[tmp / "outputs" / "r"])


@case(ExitCode.PREEMPTED, "stopped on request before training started")
def sigterm_while_preparing_the_data(tmp: Path, model: Path, request: Any) -> Setup:
    return Setup(
        _long(tmp, model), during=_signal_when("run.started", signal.SIGTERM), not_complete=[tmp / "outputs" / "r"]
    )


@case(ExitCode.INTERRUPTED, "interrupted (SIGINT)")
def sigint_while_training(tmp: Path, model: Path, request: Any) -> Setup:
    during = _signal_when("train.progress", signal.SIGINT, after=2)
    return Setup(_long(tmp, model), during=during, not_complete=[tmp / "outputs" / "r"])


@case(ExitCode.PREEMPTED, "stopped on request after scoring")
def sigterm_while_scoring(tmp: Path, model: Path, request: Any) -> Setup:
    folder = write(tmp / "to-score" / "test.jsonl", [{"text": r["text"]} for r in rows("binary", 3000)]).parent
    env = ft_env(tmp, request.getfixturevalue("classifier"), folder, FT_RUN_ID="r", FT_EVAL_BATCH_SIZE="1")
    return Setup(
        env,
        commands=("predict",),
        during=_signal_when("predict.scoring", signal.SIGTERM),
        not_complete=[tmp / "outputs" / "r"],
    )


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny BERT with a (random) sequence-classification head, as predict takes it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("classifier")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2, id2label={0: "0", 1: "1"})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


def _aws() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


@pytest.mark.parametrize("name", list(CASES))
def test_fault_gives_one_line_its_exit_code_and_nothing_complete(
    name: str, tmp_path: Path, tiny_model: Path, request: pytest.FixtureRequest
) -> None:
    fault = CASES[name]
    if fault.root and not ROOT_ONLY:
        pytest.skip("needs root and unshare (mounts, chattr)")
    setup = fault.make(tmp_path, tiny_model, request)
    lines = {}
    for command in setup.commands:
        code, events, stderr = run_job(command, setup, tmp_path)
        assert code != 99, f"{command}: a run folder was left behind, complete or partial"
        errors = [e for e in events if e["level"] == "error"]
        assert code == fault.code, f"{command}: exit {code}, {errors or stderr[-3000:]}"
        assert len(errors) == 1 and "\n" not in errors[0]["error"], errors
        assert not any(e["event"] in ("run.crashed", "worker.crashed") for e in events)
        assert fault.line in errors[0]["error"], errors[0]["error"]
        assert "planted" not in json.dumps(events) + stderr
        lines[command] = errors[0]["error"]
    assert len(set(lines.values())) == 1, lines  # check, the run and predict say the same
    for run in tmp_path.rglob("_COMPLETE.json"):
        raise AssertionError(f"{run} is marked complete")
    if fault.code == ExitCode.PREEMPTED and setup.commands == ("train",):
        saved = [e for e in events if e["event"] == "checkpoint.saved"]
        if saved:  # the checkpoint it names is complete: its marker was written last
            folder = tmp_path / "cache" / "checkpoints" / "r" / f"checkpoint-{saved[-1]['step']}"
            assert (folder / "ftjob-checkpoint.json").is_file()
