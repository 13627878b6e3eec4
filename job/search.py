"""Hyperparameter search (FT_SEARCH_TRIALS > 0): Optuna's TPE sampler proposes learning
rate, batch size, epochs, warm-up and weight decay from the FT_SEARCH_* ranges; each
trial is a whole training run (in this process or on every GPU, through launch.train)
scored by the best-model metric on the evaluation split. The final training then runs
once, as without a search, with the best trial's values.

Trials train in scratch folders of their own and never touch the run's checkpoints or
its output. The record of finished trials lives beside the run's checkpoints (in
FT_CHECKPOINT_DIR, so it survives whatever they survive): a run restarted with the same
FT_RUN_ID skips the trials already done, and one whose final training had begun
resumes it with the recorded values instead of searching again.
"""

from __future__ import annotations

import gc
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from job import fingerprint, launch, metrics
from job.checkpoints import Checkpoints, latest
from job.defaults import Defaults
from job.errors import ConfigError, Preempted, TrainingError
from job.files import write_json
from job.logs import get_logger
from job.preemption import StopRequest
from job.prepare import PreparedData
from job.settings import Settings
from job.storage import read_json
from job.storage import write_json as write_object
from job.topology import Topology
from job.workspace import Workspace

RECORD = "search.json"  # beside the run's checkpoints
TRIALS_FILE = "search_trials.jsonl"  # in the published run
_PARAMS = "params.json"  # in a trial's scratch folder

log = get_logger("job.search")


@dataclass(frozen=True)
class SearchResult:
    settings: Settings  # the final run's: the best trial's values applied
    record: dict[str, Any]  # what the run manifest and the model card show


def check_supported(settings: Settings, topology: Topology) -> None:
    """Before any download: the search's own preconditions."""
    if not settings.search_trials:
        return
    if topology.outer is not None:
        raise ConfigError(
            f"FT_SEARCH_TRIALS={settings.search_trials} needs fresh worker processes for every trial, which a "
            "launch by torchrun or accelerate launch cannot give; run `python -m job` without them (it starts "
            "its workers itself), or unset FT_SEARCH_TRIALS"
        )
    if topology.nnodes > 1:
        raise ConfigError(
            f"FT_SEARCH_TRIALS={settings.search_trials} runs on one node (with all its GPUs), but this run has "
            f"{topology.nnodes} nodes; search on one node, then train on several with the chosen values"
        )
    _optuna()


def space(settings: Settings) -> dict[str, dict[str, Any]]:
    """The searched parameters (named as Settings fields) and their ranges."""
    found: dict[str, dict[str, Any]] = {}
    if settings.search_learning_rate:
        low, high = settings.search_learning_rate
        found["learning_rate"] = {"type": "float", "low": low, "high": high, "log": True}
    if settings.search_batch_size:
        found["batch_size"] = {"type": "choice", "choices": list(settings.search_batch_size)}
    if settings.search_epochs:
        low, high = settings.search_epochs
        found["epochs"] = {"type": "int", "low": low, "high": high}
    if settings.search_warmup_ratio:
        low, high = settings.search_warmup_ratio
        found["warmup_ratio"] = {"type": "float", "low": low, "high": high, "log": False}
    if settings.search_weight_decay:
        low, high = settings.search_weight_decay
        found["weight_decay"] = {"type": "float", "low": low, "high": high, "log": False}
    return found


def most_trial_epochs(settings: Settings, chosen: Defaults) -> float:
    """The most epochs a trial can train: the top of FT_SEARCH_EPOCHS, or else the most the
    defaults choose for any batch size searched (fewer steps per epoch, more epochs)."""
    if settings.search_epochs:
        return float(settings.search_epochs[1])
    batches = [{"batch_size": b} for b in settings.search_batch_size or ()] or [{}]
    return max(float(chosen.settings(b, announce=False).epochs or 0) for b in batches)


def recorded(
    settings: Settings, prepared: PreparedData, saved: Checkpoints, inputs: dict[str, Any]
) -> dict[str, Any] | None:
    """This run id's search record, checked against this run's search settings and `inputs`
    (the run's fingerprint but its training settings): ConfigError when they differ."""
    record = _Record(saved)
    previous = record.load()
    if previous is None:
        return None
    wanted = _header(settings, prepared, inputs)
    searched = {k: v for k, v in wanted.items() if k != "inputs"}
    if {k: previous.get(k) for k in searched} != searched:
        raise ConfigError(
            f"FT_SEARCH_*: run {settings.run_id} already searched with other settings (metric, seed or ranges "
            f"in {record.location}); restore them or start a new FT_RUN_ID"
        )
    made_with = previous.get("inputs")
    fingerprint.check_resumable(
        None if made_with is None else {"settings": {}, **made_with},
        {"settings": {}, **inputs},
        run_id=settings.run_id,
        what=f"its search record ({record.location})",
    )
    return previous


def search(
    settings: Settings,
    prepared: PreparedData,
    model_path: Path,
    topology: Topology,
    chosen: Defaults,
    *,
    saved: Checkpoints,
    stop: StopRequest,
    previous: dict[str, Any] | None,
    inputs: dict[str, Any],
    final_started: bool,
) -> SearchResult:
    """Run the trials not yet in `previous` (the checked record, see `recorded`), then pick the best;
    each trial's values count as given and `chosen` fills in the defaults for them, as for the final
    training's. `final_started`: the final training has checkpoints already, so only the recorded
    choice may be used."""
    optuna = _optuna()
    header = _header(settings, prepared, inputs)
    metric = header["metric"]
    record = _Record(saved)
    trials: list[dict[str, Any]] = previous["trials"] if previous else []

    if final_started:
        if not previous or not previous.get("best"):
            raise ConfigError(
                f"FT_SEARCH_TRIALS={settings.search_trials}: run {settings.run_id} has checkpoints of a final "
                "training that no finished search chose; start a new FT_RUN_ID, or resume it with FT_SEARCH_TRIALS=0"
            )
        log.info("search.reused", reason="the final training had started", best=previous["best"])
        return SearchResult(chosen.settings(previous["best"]["params"]), previous)

    distributions = _distributions(optuna, header["space"])
    study = optuna.create_study(direction=header["direction"])
    for done in trials:
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE if done["state"] == "complete" else optuna.trial.TrialState.FAIL,
                value=done["value"] if done["state"] == "complete" else None,
                params=done["params"],
                distributions=distributions,
            )
        )
    log.info(
        "search.started",
        trials=settings.search_trials,
        already_done=len(trials),
        metric=metric,
        direction=header["direction"],
        space=header["space"],
        timeout_s=settings.search_timeout,
    )
    stopped_by = "trials"
    while len(trials) < settings.search_trials:
        if settings.search_timeout and sum(t["seconds"] for t in trials) >= settings.search_timeout:
            stopped_by = "timeout"
            break
        if stop.requested:
            raise Preempted(
                f"stopped on request during the hyperparameter search, after {len(trials)} of "
                f"{settings.search_trials} trials; run again with FT_RUN_ID={settings.run_id} to continue it"
            )
        number = len(study.trials)
        # A sampler seeded per trial number: with the same history, a restarted search
        # proposes exactly what the uninterrupted one would have.
        study.sampler = optuna.samplers.TPESampler(
            seed=(settings.seed + number) % 2**32, n_startup_trials=_startup_trials(settings.search_trials)
        )
        trial = study.ask(distributions)
        result = _run_trial(
            settings, prepared, model_path, topology, chosen, number=number, params=trial.params, stop=stop
        )
        if result["state"] == "complete":
            study.tell(trial, result["value"])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        trials.append(result)
        record.save({**header, "trials": trials, "best": None})
        log.info("search.trial", **result)

    completed = [t for t in trials if t["state"] == "complete"]
    if not completed:
        raise TrainingError(
            f"all {len(trials)} search trials failed (trial 0: {trials[0].get('error')}); "
            "narrow the FT_SEARCH_* ranges (a smaller batch size or learning rate)"
        )
    pick = min if header["direction"] == "minimize" else max
    best = pick(completed, key=lambda t: t["value"])  # the earliest of equals
    document = {
        **header,
        "trials_requested": settings.search_trials,
        "timeout_s": settings.search_timeout,
        "stopped_by": stopped_by,
        "trials": trials,
        "best": {"number": best["number"], "params": best["params"], "value": best["value"]},
    }
    record.save(document)  # before the final training checkpoints anything
    log.info(
        "search.completed",
        trials=len(trials),
        failed=len(trials) - len(completed),
        stopped_by=stopped_by,
        best_trial=best["number"],
        best_params=best["params"],
        best_value=best["value"],
        metric=metric,
        seconds=round(sum(t["seconds"] for t in trials), 1),
    )
    return SearchResult(chosen.settings(best["params"]), document)


def _header(settings: Settings, prepared: PreparedData, inputs: dict[str, Any]) -> dict[str, Any]:
    metric = metrics.best_model_metric(settings.metric_for_best_model, prepared.labels.problem_type)
    assert metric is not None  # a real problem type always has one
    return {
        "metric": metric,
        "split": "validation",
        "direction": "maximize" if metrics.greater_is_better(metric) else "minimize",
        "sampler": "optuna TPE",
        "seed": settings.seed,
        "space": space(settings),
        "inputs": inputs,
    }


def write_trials(path: Path, record: dict[str, Any]) -> None:
    with path.open("w") as handle:
        for trial in record["trials"]:
            handle.write(json.dumps(trial) + "\n")


def _run_trial(
    settings: Settings,
    prepared: PreparedData,
    model_path: Path,
    topology: Topology,
    chosen: Defaults,
    *,
    number: int,
    params: dict[str, Any],
    stop: StopRequest,
) -> dict[str, Any]:
    work = Workspace.of(settings).trial(number)
    folder = work.root
    checkpoints = work.checkpoint_mirror
    # A trial cut short by a stop request resumes from its own checkpoint, if it is the same trial.
    same = (folder / _PARAMS).is_file() and json.loads((folder / _PARAMS).read_text()) == params
    if not same:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / _PARAMS, params)
    resume = latest(checkpoints)
    log.info("search.trial_started", number=number, params=params)
    result: dict[str, Any] = {"number": number, "params": params}
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(search_trial=number):
        try:
            outcome = launch.train(
                chosen.settings(params),  # the defaults chosen again for the trial's values
                prepared,
                model_path,
                topology,
                work,
                checkpoints=checkpoints,
                resume=resume,
                stop=stop,
            )
        except TrainingError as exc:  # e.g. out of memory at the largest batch size: a bad point, not a bad run
            result.update(state="failed", value=None, error=exc.message)
        else:
            assert outcome is not None  # one node: this one
            value = outcome.best_value
            if value is None or not math.isfinite(value):
                result.update(state="failed", value=None, error=f"no finite validation {outcome.best_metric}")
            else:
                result.update(state="complete", value=float(value))
    result["seconds"] = round(time.monotonic() - started, 2)
    shutil.rmtree(folder, ignore_errors=True)
    # The trial's model and optimizer hang in reference cycles (Trainer and callbacks);
    # free them and the cached GPU blocks before the next trial allocates its own.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _startup_trials(total: int) -> int:
    """Random proposals before TPE models the results: Optuna's 10, or half of a short search."""
    return max(1, min(10, total // 2))


def _distributions(optuna: Any, searched: dict[str, dict[str, Any]]) -> dict[str, Any]:
    d = optuna.distributions
    found: dict[str, Any] = {}
    for name, spec in searched.items():
        if spec["type"] == "choice":
            found[name] = d.CategoricalDistribution(tuple(spec["choices"]))
        elif spec["type"] == "int":
            found[name] = d.IntDistribution(spec["low"], spec["high"])
        else:
            found[name] = d.FloatDistribution(spec["low"], spec["high"], log=spec["log"])
    return found


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "FT_SEARCH_TRIALS needs optuna, which is not installed; install the hpo extra "
            "(pip install 'ftjob[hpo]') or set FT_SEARCH_TRIALS=0"
        ) from None
    # Its per-trial INFO lines repeat search.trial; its warnings go through our renderer.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    return optuna


class _Record:
    """The search so far, as JSON in the run's durable checkpoint folder (FT_CHECKPOINT_DIR, S3 included)."""

    def __init__(self, saved: Checkpoints) -> None:
        self.store = saved.store
        self.location = f"{saved.store.location.rstrip('/')}/{RECORD}"

    def load(self) -> dict[str, Any] | None:
        return read_json(self.store, RECORD, fix="delete it to search again")

    def save(self, document: dict[str, Any]) -> None:
        write_object(self.store, RECORD, document)
