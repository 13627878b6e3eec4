"""The steps every command takes, in this order: settings -> preflight -> inputs -> work and
staging folders -> phases -> publish. `train` (main.py), `check` and `predict` are each
read top to bottom through them, and none of the three imports another."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from job import checkpoints, defaults, metrics, modeling, ownership, promotion, search, trackers
from job.checkpoints import Checkpoints
from job.errors import ConfigError
from job.logs import get_logger
from job.ownership import Lease
from job.prepare import PreparedData, prepare
from job.settings import Settings
from job.storage import Output, check_apart, check_cache, open_output
from job.topology import Topology
from job.workspace import Workspace

log = get_logger("job")


@dataclass
class Phases:
    """Wall-clock seconds per named phase of a command."""

    started: float = field(default_factory=time.time)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begin = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - begin

    def elapsed(self) -> float:
        return time.time() - self.started

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.seconds.items()}


def writable_output(settings: Settings, *, dry_run: bool = False) -> Output:
    """FT_OUTPUT, checked writable before anything is downloaded or trained (a dry run leaves nothing there)."""
    check_apart(settings)
    check_cache(settings)
    output = open_output(settings)
    output.check_writable(dry_run=dry_run)
    return output


@contextlib.contextmanager
def owned(settings: Settings, work: Workspace, saved: Checkpoints, topology: Topology | None = None) -> Iterator[Lease]:
    """The run id for this process alone while the command runs: a lock per node beside the
    work folder, and on the main node (of `topology`; a single process without it) a lease
    beside the durable checkpoints."""
    main = topology is None or topology.is_main_node
    node = topology.node_rank if topology is not None else 0
    with ownership.owned(
        settings, lock_dir=work.root.parent, node_rank=node, store=saved.root if main else None
    ) as lease:
        yield lease


def probe_owner(settings: Settings, topology: Topology, work: Workspace, saved: Checkpoints) -> dict[str, Any]:
    """What `owned` would find, taking nothing: the run's error for a live owner."""
    store = saved.root if topology.is_main_node else None
    return ownership.probe(settings, lock_dir=work.root.parent, node_rank=topology.node_rank, store=store)


def already_complete(output: Output) -> dict[str, Any] | None:
    """The summary of a run id that was published in full already: re-running it does nothing."""
    if not output.is_complete():
        return None
    log.info("run.already_complete", location=output.location, effect="nothing to do")
    return {"status": "already_complete", "location": output.location}


def preflight(
    settings: Settings, topology: Topology, work: Workspace, *, dry_run: bool = False
) -> tuple[Output, Checkpoints]:
    """Fail before any download or training when the run could not finish: settings that
    depend on each other, locations that overlap, then write access to the output and the
    checkpoints (a dry run leaves nothing there) and a readable promotion pointer. Only the
    main node writes, so only it checks those."""
    if topology.nnodes > 1 and "run_id" not in settings.model_fields_set:
        raise ConfigError("a multi-node run needs FT_RUN_ID, set to the same value on every node")
    promotion.check_supported(settings)
    trackers.check_available(settings)
    search.check_supported(settings, topology)
    check_apart(settings)
    check_cache(settings)
    output = open_output(settings)
    saved = checkpoints.locate(settings, work.checkpoint_mirror)
    if topology.is_main_node:
        output.check_writable(dry_run=dry_run)  # before hours of training, not after
        checkpoints.check_writable(saved, dry_run=dry_run)
        promotion.check_pointer(output)
    return output, saved


@dataclass(frozen=True)
class Inputs:
    model_path: Path  # a local folder (downloaded or mirrored when FT_MODEL is remote)
    tokenizer: PreTrainedTokenizerBase
    prepared: PreparedData  # the tokenized splits (cached per node)
    metric: str  # the best-model metric, valid for the data's problem type
    hidden_size: int | None  # the model's width, as its config says (None: it does not say)


def load_inputs(settings: Settings) -> Inputs:
    model_path = modeling.resolve_model(settings)
    config = modeling.load_config(model_path, settings)
    tokenizer = modeling.load_tokenizer(model_path, settings)
    modeling.check_tokenizer_matches(tokenizer, config)
    prepared = prepare(settings, tokenizer, modeling.max_length(settings, tokenizer, config))
    metric = metrics.best_model_metric(settings.metric_for_best_model, prepared.labels.problem_type)
    assert metric is not None  # a real problem type always has one
    return Inputs(model_path, tokenizer, prepared, metric, getattr(config, "hidden_size", None))


def defaults_for(settings: Settings, inputs: Inputs, topology: Topology) -> defaults.Defaults:
    """What the training defaults left unset are chosen from: the data, the model and the processes."""
    return defaults.Defaults(
        settings, train_rows=len(inputs.prepared.train), hidden_size=inputs.hidden_size, world_size=topology.world_size
    )


def fresh_folder(path: Path) -> Path:
    """An empty folder: a previous attempt's partial files are removed."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def publish(output: Output, staging: Path, *, message: str, phases: Phases) -> str:
    with phases.phase("publish"):
        return output.publish(staging, message=message)
