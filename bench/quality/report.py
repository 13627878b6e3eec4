"""results.json and its markdown table: every run recorded, then mean and standard error
over seeds per dataset and recipe, and the job's difference from the notebook paired by
seed (both trained and tested on the same rows, so the pairing removes the draw's luck).

The file accumulates: a run replaces an earlier one of the same dataset, recipe, seed and
row counts, and the others stay. A benchmark of many hours can so be run a dataset or a
seed at a time (`--datasets`, `--seeds`, `--resume`), on one machine per dataset at best:
wall times compare only within one machine (each run records its CPU).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.quality.samples import Draw

METRICS = ("accuracy", "f1_macro", "wall_s")


def new() -> dict[str, Any]:
    return {"bench": "quality", "datasets": {}, "runs": []}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else new()


def save(document: dict[str, Any], path: Path) -> None:
    document["summary"] = summary(document)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # never a half-written results file
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.rename(path)
    path.with_suffix(".md").write_text(markdown(document))


def key(run: dict[str, Any]) -> tuple:
    """What makes two runs the same measurement: the recipe on the same draw of rows."""
    return run["recipe"], run["dataset"], run["train_rows"], run["test_rows"], run["seed"]


def add(document: dict[str, Any], run: dict[str, Any]) -> None:
    document["runs"] = [r for r in document["runs"] if key(r) != key(run)] + [run]


def recorded(document: dict[str, Any], recipe: str, draw: Draw) -> dict[str, Any] | None:
    """The successful run of `recipe` on `draw`, if there is one."""
    wanted = (recipe, draw.dataset, draw.train_rows, draw.test_rows, draw.seed)
    return next((r for r in document["runs"] if key(r) == wanted and r.get("status") == "ok"), None)


def to_run(document: dict[str, Any], recipes: tuple[str, ...], draw: Draw, *, resume: bool) -> list[str]:
    """The recipes of one draw to run now: all of them; with `resume`, none when all are
    recorded, else the missing ones and any recorded on another machine (CPU model or CPUs
    used) than this one, so the two recipes of a draw are always timed on the same machine."""
    if not resume:
        return list(recipes)
    found = {recipe: recorded(document, recipe, draw) for recipe in recipes}
    if all(found.values()):
        return []
    here = (document["machine"]["cpu"], document["machine"].get("cpus_used"))
    return [r for r, run in found.items() if run is None or (run.get("cpu"), run.get("cpus_used")) != here]


def mean_se(values: list[float]) -> dict[str, Any]:
    """Mean and its standard error (sample standard deviation / sqrt(n)); no error from one value."""
    if not values:
        return {"mean": None, "se": None, "n": 0}
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "se": se, "n": len(values)}


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """Per dataset, over the successful runs at the row counts it was last run with."""
    out: dict[str, Any] = {}
    for name, dataset in document["datasets"].items():
        rows = (dataset.get("train_rows"), dataset.get("test_rows"))
        runs = [r for r in document["runs"] if r["dataset"] == name and (r["train_rows"], r["test_rows"]) == rows
                and r.get("status") == "ok"]  # fmt: skip
        if not runs:
            continue
        by_recipe = {recipe: {r["seed"]: r for r in runs if r["recipe"] == recipe} for recipe in ("notebook", "job")}
        found: dict[str, Any] = {
            recipe: {metric: mean_se([r[metric] for r in seeds.values()]) for metric in METRICS}
            for recipe, seeds in by_recipe.items()
            if seeds
        }
        paired = sorted(set(by_recipe["notebook"]) & set(by_recipe["job"]))
        if paired:
            job, notebook = by_recipe["job"], by_recipe["notebook"]
            found["job_minus_notebook"] = {
                metric: mean_se([job[s][metric] - notebook[s][metric] for s in paired])
                for metric in ("accuracy", "f1_macro")
            }
            found["wall_ratio_job_to_notebook"] = mean_se([job[s]["wall_s"] / notebook[s]["wall_s"] for s in paired])
            found["paired_seeds"] = paired
        found["cpus"] = sorted({r.get("cpu", "?") for r in runs})
        out[name] = found
    return out


def _cell(stat: dict[str, Any] | None, digits: int, signed: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    text = f"{stat['mean']:+.{digits}f}" if signed else f"{stat['mean']:,.{digits}f}"
    return text if stat.get("se") is None else f"{text} ± {stat['se']:,.{digits}f}"


def markdown(document: dict[str, Any]) -> str:
    summaries = document.get("summary") or summary(document)
    config = document.get("config", {})
    machine = document.get("machine", {})
    lines = [
        "# Quality: the notebook recipe vs the job's defaults" + (" (dry run: numbers mean nothing)" if
                                                                  document.get("dry_run") else ""),
        "",
        f"Model {config.get('model_name', '?')}; mean ± one standard error over seeds (same rows for both "
        "recipes in each seed); wall time of the whole process (load, tokenize, train, predict the test rows, "
        "save). Last run " + f"{document.get('updated_utc', '?')} on {machine.get('cpu', '?')} "
        f"(runs on {machine.get('cpus_used', machine.get('cpus', '?'))} of its {machine.get('cpus', '?')} CPUs).",
        "",
        "| dataset | shape | rows train / test | recipe | accuracy | macro-F1 | wall (s) | seeds |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for name, dataset in document["datasets"].items():
        found = summaries.get(name)
        rows = f"{dataset.get('train_rows', '?')} / {dataset.get('test_rows', '?')}"
        if not found:
            reason = dataset.get("reason") or "no successful run yet"
            lines.append(f"| {name} | {dataset.get('shape', '')} | {rows} | — | {reason} | | | |")
            continue
        first = True
        for recipe in ("notebook", "job"):
            if recipe not in found:
                continue
            stat = found[recipe]
            label = " | ".join((name, dataset.get("shape", ""), rows) if first else ("", "", ""))
            scores = " | ".join((_cell(stat["accuracy"], 3), _cell(stat["f1_macro"], 3), _cell(stat["wall_s"], 0)))
            lines.append(f"| {label} | {recipe} | {scores} | {stat['accuracy']['n']} |")
            first = False
        if "job_minus_notebook" in found:
            diff, ratio = found["job_minus_notebook"], found["wall_ratio_job_to_notebook"]
            scores = " | ".join((_cell(diff["accuracy"], 3, signed=True), _cell(diff["f1_macro"], 3, signed=True),
                                 _cell(ratio, 2) + "×"))  # fmt: skip
            lines.append(f"| | | | job − notebook | {scores} | {diff['accuracy']['n']} |")
        if len(found["cpus"]) > 1:
            lines.append(f"| | | | (runs on {len(found['cpus'])} CPU models: wall times do not compare) | | | | |")
    failed = [r for r in document["runs"] if r.get("status") != "ok"]
    if failed:
        lines += ["", "Failed runs (see results.json):", ""]
        lines += [f"- {r['dataset']} / {r['recipe']} / seed {r['seed']}: exit code {r.get('exit_code')}"
                  for r in failed]  # fmt: skip
    return "\n".join(lines) + "\n"
