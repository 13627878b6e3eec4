"""Whether a restarted run resumes: its checkpoints and search record checked against the
inputs of this run (job.fingerprint), never mixed with other ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job import checkpoints, device, fingerprint, search
from job.checkpoints import Checkpoints
from job.defaults import Defaults
from job.errors import ConfigError
from job.logs import get_logger
from job.scaffold import Inputs
from job.settings import Settings
from job.topology import Topology

log = get_logger("job.resume")


@dataclass(frozen=True)
class Resume:
    checkpoint: Path | None  # the local checkpoint to resume from; None: from scratch (always, in a dry run)
    inputs: dict[str, Any]  # this run's fingerprint, with the settings as resolved (defaults chosen)
    search_record: dict[str, Any] | None  # the search so far, to continue from
    found: str | None = None  # the newest checkpoint, the one a run resumes from


def decide(
    settings: Settings, inputs: Inputs, saved: Checkpoints, topology: Topology, chosen: Defaults, *, dry_run: bool
) -> Resume:
    """The run's own checks (`settings`: as `chosen` resolved them): a search record or a
    checkpoint made with other inputs stops it with a ConfigError naming the changes, or
    (FT_CHANGED_INPUTS=discard) is deleted. The dry run reads the newest checkpoint's marker in
    place; the run downloads the checkpoints."""
    current = fingerprint.of_run(
        settings,
        inputs.prepared,
        inputs.model_path,
        inputs.tokenizer,
        world_size=topology.world_size,
        precision=device.precision(settings.mixed_precision),
    )
    try:
        record, newest = _checked(settings, inputs, saved, current, chosen, dry_run=dry_run)
    except ConfigError as exc:
        if settings.changed_inputs != "discard":
            raise
        log.warning("checkpoint.discarded", location=saved.durable, reason=exc.message, dry_run=dry_run)
        if not dry_run and topology.is_main_node:  # the other nodes only stop resuming them
            checkpoints.remove(saved)
        return Resume(None, current, None)
    checkpoint = checkpoints.latest(saved.local) if newest is not None and not dry_run else None
    return Resume(checkpoint, current, record, found=newest)


def search_inputs(current: dict[str, Any]) -> dict[str, Any]:
    """What a search record is checked against: the fingerprint but the training settings, which trials vary."""
    return {k: v for k, v in current.items() if k != "settings"}


def for_settings(current: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The fingerprint of the final training, whose settings a search may have chosen."""
    return {**current, "settings": fingerprint.of_settings(settings)}


def _checked(
    settings: Settings,
    inputs: Inputs,
    saved: Checkpoints,
    current: dict[str, Any],
    chosen: Defaults,
    *,
    dry_run: bool,
) -> tuple[dict[str, Any] | None, str | None]:
    record = (
        search.recorded(settings, inputs.prepared, saved, search_inputs(current)) if settings.search_trials else None
    )
    if dry_run:
        found = checkpoints.newest_in_store(saved)
    else:
        local = checkpoints.restore(saved)
        found = (local.name, checkpoints.marker(local)) if local is not None else None
    if found is None:
        return record, None
    name, marker = found
    final = settings
    if record is not None and record.get("best"):
        final = chosen.settings(record["best"]["params"], announce=False)  # what the final training ran with
    fingerprint.check_resumable(
        marker.get("inputs"), for_settings(current, final), run_id=settings.run_id, what=f"its {name}"
    )
    return record, name
