"""The job, top to bottom: settings -> data -> tokenize -> [search] -> train -> evaluate
-> save -> verify -> publish.

    FT_MODEL=bert-base-uncased FT_DATASET=imdb python -m job
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from transformers import PreTrainedTokenizerBase

from job import artifacts, card, charts, checkpoints, launch, modeling, promotion, search, trackers
from job.checkpoints import Checkpoints
from job.errors import ConfigError, NotPromoted, Preempted
from job.files import write_json
from job.logs import get_logger
from job.preemption import STOP_FILE, StopRequest
from job.prepare import PreparedData, prepare
from job.settings import Settings
from job.storage import Output, open_output
from job.topology import Topology, discover
from job.verify import verify_saved_model

log = get_logger("job")


@dataclass
class _Timings:
    started: float = field(default_factory=time.time)
    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begin = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = time.monotonic() - begin


def main(settings: Settings) -> dict[str, Any]:
    """Run the job; returns the summary it logs. Raises JobError subclasses on failure.

    Runs once per node; training fans out to every GPU of every node, and only the
    main node writes, verifies and publishes.
    """
    timings = _Timings()
    topology = discover(settings)
    stop = StopRequest(settings.run_work_dir() / STOP_FILE)
    stop.clear()  # a previous attempt's request
    with (
        stop.installed(),
        structlog.contextvars.bound_contextvars(rank=topology.first_rank, node_rank=topology.node_rank),
    ):
        log.info("launch.topology", **asdict(topology), world_size=topology.world_size)
        return _run(settings, topology, timings, stop)


def preflight(settings: Settings, topology: Topology, *, dry_run: bool = False) -> tuple[Output, Checkpoints]:
    """Fail before any download or training when the run could not finish: settings that
    depend on each other, then write access to the output and the checkpoints (a dry run
    leaves nothing there)."""
    if topology.nnodes > 1 and "run_id" not in settings.model_fields_set:
        raise ConfigError("a multi-node run needs FT_RUN_ID, set to the same value on every node")
    promotion.check_supported(settings)
    trackers.check_available(settings)
    search.check_supported(settings, topology)
    output = open_output(settings)
    saved = checkpoints.locate(settings)
    if topology.is_main_node:
        output.check_writable(dry_run=dry_run)  # before hours of training, not after
        checkpoints.check_writable(saved, settings, dry_run=dry_run)
    return output, saved


def load_inputs(settings: Settings) -> tuple[Path, PreTrainedTokenizerBase, PreparedData]:
    """The model folder, its tokenizer and the tokenized splits (cached per node)."""
    model_path = modeling.resolve_model(settings)
    config = modeling.load_config(model_path, settings)
    tokenizer = modeling.load_tokenizer(model_path, settings)
    modeling.check_tokenizer_matches(tokenizer, config)
    return model_path, tokenizer, prepare(settings, tokenizer, modeling.max_length(settings, tokenizer, config))


def _run(settings: Settings, topology: Topology, timings: _Timings, stop: StopRequest) -> dict[str, Any]:
    output, saved = preflight(settings, topology)
    if output.is_complete():
        log.info("run.already_complete", location=output.location, effect="nothing to do")
        return {"status": "already_complete", "location": output.location}
    work = settings.run_work_dir()
    staging = work / "model"
    if topology.is_main_node:
        shutil.rmtree(staging, ignore_errors=True)  # a previous attempt's partial files
        staging.mkdir(parents=True)
    log.info("run.started", model=settings.model, dataset=settings.dataset, output=output.location, work_dir=str(work))

    with timings.phase("prepare"):
        model_path, _, prepared = load_inputs(settings)

    resume = checkpoints.restore(saved, settings)
    if stop.requested:
        raise Preempted(f"stopped on request before training started; run again with FT_RUN_ID={settings.run_id}")
    searched = None
    if settings.search_trials:
        with timings.phase("search"):
            searched = search.search(
                settings, prepared, model_path, topology, saved=saved, stop=stop, final_started=resume is not None
            )
        settings = searched.settings  # the final training uses the best trial's values
    with timings.phase("train_and_evaluate"), checkpoints.mirrored(saved, settings, active=topology.is_main_node):
        outcome = launch.train(
            settings, prepared, model_path, topology, work, checkpoints=saved, resume=resume, stop=stop
        )
    if outcome is None:
        log.info("node.finished", effect="the main node verifies and publishes")
        return {"status": "node_finished", "node_rank": topology.node_rank}

    document = artifacts.metrics_document(outcome, prepared)
    write_json(staging / artifacts.METRICS, document)
    if outcome.test is not None:
        artifacts.write_predictions(staging / artifacts.TEST_PREDICTIONS, outcome.test, prepared.labels)
    if settings.charts:
        with timings.phase("charts"):
            charts.draw(staging, outcome.validation, prepared.labels, metric=outcome.best_metric)
    if searched is not None:
        search.write_trials(staging / search.TRIALS_FILE, searched.record)

    with timings.phase("verify"):
        verification = verify_saved_model(
            staging, prepared, outcome.validation, settings, precision=outcome.stats["precision"]
        )

    production = output.read_latest() if settings.promote_if_better else None
    decision = promotion.decide(settings, document["headline"], production)

    first_step = outcome.stats.get("first_step_unix")
    if first_step:
        timings.phases["to_first_step"] = first_step - timings.started
    timings.phases["total_before_publish"] = time.time() - timings.started
    manifest = artifacts.run_manifest(
        settings,
        prepared,
        outcome,
        timings=timings.phases,
        verification=verification,
        promotion=decision.record(),
        files=sorted(p.name for p in staging.iterdir()),
        search=searched.record if searched else None,
    )
    write_json(staging / artifacts.RUN_MANIFEST, manifest)
    (staging / "README.md").write_text(card.render(settings, document, manifest, model_ref=output.model_ref))

    headline = document["headline"]
    message = f"{headline['metric']}={headline['value']:.4f} on validation" if headline["value"] is not None else ""
    with timings.phase("publish"):
        location = output.publish(staging, message=message)
    checkpoints.remove(saved, settings)  # superseded by the published model
    shutil.rmtree(work, ignore_errors=True)
    if decision.promoted:
        output.write_latest(promotion.pointer(settings, decision, location))

    summary = {
        "status": "completed",
        "location": location,
        "metrics": f"{location.rstrip('/')}/{artifacts.METRICS}",
        "headline_metric": document["headline"]["metric"],
        "headline_value": document["headline"]["value"],
        "wall_s": round(time.time() - timings.started, 1),
        "train_samples_per_second": outcome.stats.get("train_samples_per_second"),
        "padding_efficiency": outcome.stats.get("padding_efficiency"),
        "promoted": decision.promoted,
        "promotion": decision.reason,
    }
    log.info("run.completed", **summary)
    if not decision.promoted:
        raise NotPromoted(f"not promoted: {decision.reason}; kept as a candidate at {location}, latest unchanged")
    return summary
