"""The promotion gate of scheduled retraining: does this run become `latest`?

`latest.json` beside the runs at FT_OUTPUT records the production run and its
headline metric. A run is promoted when it clears FT_PROMOTE_MIN (if set) and beats
that record (if FT_PROMOTE_IF_BETTER); otherwise it is still published, as a
candidate, and the job exits with code 7 so a pipeline can tell "not promoted" from
"failed".

The pointer is checked before any training (a corrupt one stops the run at once), its
write is retried, and re-running a completed run id finishes a promotion that a killed
or failed process left undone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from job.artifacts import RUN_MANIFEST
from job.errors import ConfigError, StorageError
from job.logs import get_logger
from job.metrics import greater_is_better
from job.settings import Settings
from job.storage import COMPLETE, Output

_POINTER_FIELDS = {"run_id": str, "location": str, "metric": str}
_WRITE_ATTEMPTS = 3

log = get_logger("job.promotion")


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    metric: str
    value: float | None
    production: dict[str, Any] | None

    def record(self) -> dict[str, Any]:
        return asdict(self)


def gated(settings: Settings) -> bool:
    return settings.promote_min is not None or settings.promote_if_better


def check_supported(settings: Settings) -> None:
    if gated(settings) and settings.output.lower().startswith("hf://"):
        raise ConfigError(
            "FT_PROMOTE_MIN / FT_PROMOTE_IF_BETTER need a local or s3:// FT_OUTPUT (where latest.json is kept); "
            "for the Hub, publish candidates to a branch with FT_HUB_REVISION"
        )


def decide(settings: Settings, headline: dict[str, Any], production: dict[str, Any] | None) -> Decision:
    metric, value = headline["metric"], headline["value"]
    lower = not greater_is_better(metric)

    def better(a: float, b: float) -> bool:
        return a < b if lower else a > b

    def reaches(a: float, b: float) -> bool:
        return a <= b if lower else a >= b

    def decision(promoted: bool, reason: str) -> Decision:
        return Decision(promoted, reason, metric, value, production)

    if value is None:
        return decision(not gated(settings), f"no {metric} was measured (no labelled validation rows)")
    if settings.promote_min is not None and not reaches(value, settings.promote_min):
        bound = "at most" if lower else "at least"
        return decision(False, f"{metric}={value:.4f} misses FT_PROMOTE_MIN ({bound} {settings.promote_min})")
    if settings.promote_if_better and production is not None:
        if production.get("metric") != metric:
            return decision(
                False,
                f"production records {production.get('metric')} but this run measures {metric}; set "
                f"FT_METRIC_FOR_BEST_MODEL={production.get('metric')} to compare them",
            )
        if not better(value, float(production["value"])):
            return decision(
                False,
                f"{metric}={value:.4f} does not beat production run {production.get('run_id')} "
                f"({metric}={float(production['value']):.4f})",
            )
        return decision(True, f"{metric}={value:.4f} beats production ({float(production['value']):.4f})")
    if settings.promote_if_better:
        return decision(True, "no production model recorded yet")
    return decision(True, "no promotion gate" if not gated(settings) else f"{metric}={value:.4f} clears the gate")


def check_pointer(output: Output) -> None:
    """A `latest.json` that is there must be one this job can read and compare against."""
    found = output.read_latest()  # not JSON: StorageError naming the object
    if found is None:
        return
    if not isinstance(found, dict):
        found = {}
    problems = [name for name, kind in _POINTER_FIELDS.items() if not isinstance(found.get(name), kind)]
    if not isinstance(found.get("value"), int | float | None):
        problems.append("value")
    if problems:
        raise StorageError(
            f"FT_OUTPUT: the promotion pointer latest.json beside {output.location} is not one this job wrote "
            f"(missing or wrong: {', '.join(problems)}); restore it from the run it names, or delete it "
            "to let the next run become latest"
        )


def write_pointer(output: Output, payload: dict[str, Any]) -> None:
    """Move latest.json, retrying a failed write (the storage's own retries are below this)."""
    for attempt in range(1, _WRITE_ATTEMPTS + 1):
        try:
            output.write_latest(payload)
            log.info("promotion.pointer_moved", run_id=payload["run_id"], location=payload["location"])
            return
        except StorageError as exc:
            if attempt == _WRITE_ATTEMPTS:
                raise StorageError(
                    f"{exc.message}; the run was published at {payload['location']} but latest.json still points "
                    f"elsewhere — re-run with FT_RUN_ID={payload['run_id']} to finish the promotion"
                ) from None
            log.warning("promotion.pointer_retry", attempt=attempt, error=exc.message)
            time.sleep(2**attempt)


def finish(settings: Settings, output: Output) -> bool:
    """On a re-run of a completed run id: move latest.json to it if its own decision promoted it
    and no run promoted after it was published; True when the pointer moved."""
    manifest_body, complete_body = output.read_published(RUN_MANIFEST), output.read_published(COMPLETE)
    if manifest_body is None or complete_body is None:
        return False
    recorded = json.loads(manifest_body).get("promotion") or {}
    if not recorded.get("promoted"):
        return False
    completed_at = json.loads(complete_body).get("completed_at", "")
    current = output.read_latest()
    if current is not None and (
        current.get("run_id") == settings.run_id or current.get("promoted_at", "") > completed_at
    ):
        return False  # already done, or superseded by a later run
    decision = Decision(True, str(recorded.get("reason")), recorded["metric"], recorded.get("value"), current)
    write_pointer(output, pointer(settings, decision, output.location))
    log.info("promotion.finished", run_id=settings.run_id, reason="the run was published, its promotion was not")
    return True


def pointer(settings: Settings, decision: Decision, location: str) -> dict[str, Any]:
    return {
        "run_id": settings.run_id,
        "location": location,
        "metric": decision.metric,
        "value": decision.value,
        "split": "validation",
        "promoted_at": datetime.now(UTC).isoformat(),
    }
