"""The promotion gate of scheduled retraining: does this run become `latest`?

`latest.json` beside the runs at FT_OUTPUT records the production run and its
headline metric. A run is promoted when it clears FT_PROMOTE_MIN (if set) and beats
that record (if FT_PROMOTE_IF_BETTER); otherwise it is still published, as a
candidate, and the job exits with code 7 so a pipeline can tell "not promoted" from
"failed".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from job.errors import ConfigError
from job.metrics import greater_is_better
from job.settings import Settings

LATEST = "latest.json"


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


def pointer(settings: Settings, decision: Decision, location: str) -> dict[str, Any]:
    return {
        "run_id": settings.run_id,
        "location": location,
        "metric": decision.metric,
        "value": decision.value,
        "split": "validation",
        "promoted_at": datetime.now(UTC).isoformat(),
    }
