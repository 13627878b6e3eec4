"""The job, top to bottom: settings -> preflight -> inputs (data, tokenize) -> [search] ->
train -> evaluate -> save -> verify -> publish -> promote.

    FT_MODEL=bert-base-uncased FT_DATASET=imdb python -m job
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from job import (
    artifacts,
    card,
    charts,
    checkpoints,
    handoff,
    launch,
    metrics,
    promotion,
    resume,
    scaffold,
    search,
    thresholds,
)
from job.checkpoints import Checkpoints
from job.defaults import Defaults
from job.errors import NotPromoted, Preempted
from job.files import write_json
from job.labels import class_counts
from job.logs import get_logger
from job.ownership import Lease
from job.preemption import StopRequest
from job.results import TrainOutcome
from job.resume import Resume
from job.scaffold import Inputs, Phases
from job.settings import Settings
from job.storage import Output
from job.tokenization import texts_of
from job.topology import Topology, discover
from job.verify import verify_saved_model
from job.workspace import Workspace

log = get_logger("job")


def main(settings: Settings) -> dict[str, Any]:
    """Run the job; returns the summary it logs. Raises JobError subclasses on failure.

    Runs once per node; training fans out to every GPU of every node, and only the
    main node writes, verifies and publishes.
    """
    phases = Phases()
    topology = discover(settings)
    if topology.outer is not None:
        log.info(
            "launch.mode", mode="rank of a torchrun launch", rank=topology.outer.rank,
            local_rank=topology.outer.local_rank, world_size=topology.world_size,
        )  # fmt: skip
        if topology.outer.local_rank != 0:
            return launch.follow(topology)
    else:
        log.info("launch.mode", mode="launcher", world_size=topology.world_size)
    try:
        return _launcher(settings, topology, phases)
    finally:
        if topology.outer is not None:
            handoff.release(topology)  # the node's other ranks wait for a task that may never come


def _launcher(settings: Settings, topology: Topology, phases: Phases) -> dict[str, Any]:
    work = Workspace.of(settings)
    stop = StopRequest(work.stop_file)
    with (
        stop.installed(),
        structlog.contextvars.bound_contextvars(rank=topology.first_rank, node_rank=topology.node_rank),
    ):
        log.info("launch.topology", **asdict(topology), world_size=topology.world_size)
        output, saved = scaffold.preflight(settings, topology, work)
        with scaffold.owned(settings, work, saved, topology) as lease:
            stop.clear()  # a previous attempt's request, now that this process owns the run id
            return _run(settings, topology, work, stop, phases=phases, to=_Destinations(output, saved, lease))


@dataclass(frozen=True)
class _Destinations:
    output: Output
    saved: Checkpoints
    lease: Lease  # held while the run lasts


@dataclass(frozen=True)
class _Trained:
    settings: Settings  # the final training's: with a search, the best trial's values
    inputs: Inputs
    outcome: TrainOutcome
    searched: dict[str, Any] | None  # the search record, when there was one


def _run(
    settings: Settings, topology: Topology, work: Workspace, stop: StopRequest, *, phases: Phases, to: _Destinations
) -> dict[str, Any]:
    output, saved = to.output, to.saved
    done = scaffold.already_complete(output)
    if done is not None:
        if topology.is_main_node:
            promotion.finish(settings, output)  # a promotion its publishing process did not get to
        return done
    if topology.is_main_node:
        scaffold.fresh_folder(work.staging)
    log.info(
        "run.started", model=settings.model, dataset=settings.dataset, output=output.location, work_dir=str(work.root)
    )
    with phases.phase("prepare"):
        inputs = scaffold.load_inputs(settings)
    chosen = scaffold.defaults_for(settings, inputs, topology)
    settings = chosen.settings()

    start = resume.decide(settings, inputs, saved, topology, chosen, dry_run=False)
    if stop.requested:
        raise Preempted(f"stopped on request before training started; run again with FT_RUN_ID={settings.run_id}")
    settings, searched = _search(settings, inputs, topology, saved, start, chosen=chosen, stop=stop, phases=phases)
    with phases.phase("train_and_evaluate"), checkpoints.mirrored(saved, active=topology.is_main_node):
        outcome = launch.train(
            settings,
            inputs.prepared,
            inputs.model_path,
            topology,
            work,
            checkpoints=saved.local,
            resume=start.checkpoint,
            stop=stop,
            inputs=resume.for_settings(start.inputs, settings),
        )
    if outcome is None:
        log.info("node.finished", effect="the main node verifies and publishes")
        return {"status": "node_finished", "node_rank": topology.node_rank}

    trained = _Trained(settings, inputs, outcome, searched)
    document = _write_results(trained, work.staging, phases)
    verification = _verify(trained, work.staging, phases)
    decision = _decide(settings, output, document)
    _describe(
        trained, work.staging, document, verification=verification, decision=decision, output=output, phases=phases
    )
    to.lease.check_held()  # a process that lost the run id to another one publishes nothing
    location = _publish(output, saved, work, document, phases)
    if decision.promoted:
        promotion.write_pointer(output, promotion.pointer(settings, decision, location))
    return _finish(location, document, outcome, decision, phases)


def _search(
    settings: Settings,
    inputs: Inputs,
    topology: Topology,
    saved: Checkpoints,
    start: Resume,
    *,
    chosen: Defaults,
    stop: StopRequest,
    phases: Phases,
) -> tuple[Settings, dict[str, Any] | None]:
    """With FT_SEARCH_TRIALS, the best trial's settings (the final training uses them) and the
    search record, continued from the checked one; once the final training has checkpoints,
    only the recorded choice may be used."""
    if not settings.search_trials:
        return settings, None
    with phases.phase("search"):
        searched = search.search(
            settings,
            inputs.prepared,
            inputs.model_path,
            topology,
            chosen,
            saved=saved,
            stop=stop,
            previous=start.search_record,
            inputs=resume.search_inputs(start.inputs),
            final_started=start.checkpoint is not None,
        )
    return searched.settings, searched.record


def _write_results(trained: _Trained, staging: Path, phases: Phases) -> dict[str, Any]:
    """metrics.json, test predictions, charts and the search trials beside the saved model."""
    prepared, outcome, validation = trained.inputs.prepared, trained.outcome, trained.outcome.validation
    texts = texts_of(prepared.train)  # imbalance as `check` counts it: texts, not windows
    spec = thresholds.choose(
        trained.settings.decision_thresholds,
        metrics.probabilities(validation.logits, prepared.labels),
        validation.labels,
        prepared.labels,
        train=class_counts(texts, prepared.labels),
        rows=len(texts),
    )
    if spec.thresholds is not None:
        log.info("train.thresholds", thresholds=thresholds.by_label(spec), tuned_on="validation")
        thresholds.store(staging, spec)
    document = artifacts.metrics_document(outcome, spec)
    artifacts.move_out_large_matrices(document, staging)
    write_json(staging / artifacts.METRICS, document)
    if outcome.test is not None:
        artifacts.write_predictions(staging / artifacts.TEST_PREDICTIONS, outcome.test, spec)
    if trained.settings.charts:
        with phases.phase("charts"):
            charts.draw(staging, validation, spec, metric=outcome.best_metric)
    if trained.searched is not None:
        search.write_trials(staging / search.TRIALS_FILE, trained.searched)
    return document


def _verify(trained: _Trained, staging: Path, phases: Phases) -> dict[str, Any]:
    outcome = trained.outcome
    with phases.phase("verify"):
        return verify_saved_model(
            staging, trained.inputs.prepared, outcome.validation, trained.settings, precision=outcome.stats["precision"]
        )


def _decide(settings: Settings, output: Output, document: dict[str, Any]) -> promotion.Decision:
    production = output.read_latest() if settings.promote_if_better else None
    return promotion.decide(settings, document["headline"], production)


def _describe(
    trained: _Trained,
    staging: Path,
    document: dict[str, Any],
    *,
    verification: dict[str, Any],
    decision: promotion.Decision,
    output: Output,
    phases: Phases,
) -> None:
    """The run manifest and the model card, the last files before publishing."""
    first_step = trained.outcome.stats.get("first_step_unix")
    if first_step:
        phases.seconds["to_first_step"] = first_step - phases.started
    phases.seconds["total_before_publish"] = phases.elapsed()
    manifest = artifacts.run_manifest(
        trained.settings,
        trained.inputs.prepared,
        trained.outcome,
        timings=phases.seconds,
        verification=verification,
        promotion=decision.record(),
        files=sorted(p.name for p in staging.iterdir()),
        search=trained.searched,
    )
    write_json(staging / artifacts.RUN_MANIFEST, manifest)
    card_text = card.render(
        trained.settings, document, manifest, model_ref=output.model_ref, model_revision=output.model_revision
    )
    (staging / "README.md").write_text(card_text)


def _publish(output: Output, saved: Checkpoints, work: Workspace, document: dict[str, Any], phases: Phases) -> str:
    """The verified folder to FT_OUTPUT; then the checkpoints and the scratch folder, which it supersedes, go."""
    headline = document["headline"]
    message = f"{headline['metric']}={headline['value']:.4f} on validation" if headline["value"] is not None else ""
    location = scaffold.publish(output, work.staging, message=message, phases=phases)
    checkpoints.remove(saved)
    shutil.rmtree(work.root, ignore_errors=True)
    return location


def _finish(
    location: str, document: dict[str, Any], outcome: TrainOutcome, decision: promotion.Decision, phases: Phases
) -> dict[str, Any]:
    summary = {
        "status": "completed",
        "location": location,
        "metrics": f"{location.rstrip('/')}/{artifacts.METRICS}",
        "headline_metric": document["headline"]["metric"],
        "headline_value": document["headline"]["value"],
        "wall_s": round(phases.elapsed(), 1),
        "train_samples_per_second": outcome.stats.get("train_samples_per_second"),
        "padding_efficiency": outcome.stats.get("padding_efficiency"),
        "promoted": decision.promoted,
        "promotion": decision.reason,
    }
    log.info("run.completed", **summary)
    if not decision.promoted:
        raise NotPromoted(f"not promoted: {decision.reason}; kept as a candidate at {location}, latest unchanged")
    return summary
