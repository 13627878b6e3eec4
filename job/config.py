"""Turn the environment into validated Settings, or into one readable error line."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from dotenv import dotenv_values
from pydantic import SecretStr, ValidationError

from job import metrics
from job.errors import ConfigError
from job.redaction import url_secrets
from job.settings import ENV_PREFIX, Settings, env_name, unknown_prefixed_variables
from job.storage.credentials import stored_token
from job.storage.locations import checkpoint_location, output_location

# Values of these variables are masked wherever they would be logged, and withheld from
# training workers (job/launch.py).
SECRET_VARIABLES = ("HF_TOKEN", "FT_HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Experiment trackers' credentials (FT_REPORT_TO): masked too, but workers keep them,
# because rank 0, a worker in a multi-process run, is the one that reports.
TRACKER_SECRET_VARIABLES = ("WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "DATABRICKS_TOKEN")


# Variables whose value is a URL that may carry credentials (user-info, a token parameter).
URL_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "HF_ENDPOINT", "MLFLOW_TRACKING_URI", "WANDB_BASE_URL")


def secret_values(settings: Settings | None) -> list[str]:
    """Values masked in every log line: tokens and keys (the stored Hugging Face token too), and
    the credentials inside every URL a setting or a standard variable holds (also where a
    library quotes them without the URL)."""
    values = [os.environ.get(name, "") for name in (*SECRET_VARIABLES, *TRACKER_SECRET_VARIABLES)]
    values.append(stored_token() or "")  # `hf auth login`'s file: used without any variable naming it
    urls = [os.environ.get(name, "") for name in URL_VARIABLES]
    urls += [v for k, v in os.environ.items() if k.startswith(ENV_PREFIX) and "://" in v]
    if settings is not None:
        if settings.hf_token is not None:
            values.append(settings.hf_token.get_secret_value())
        urls += [v for v in (getattr(settings, name) for name in Settings.model_fields) if isinstance(v, str)]
    values += [secret for url in urls for secret in url_secrets(url)]
    return [v for v in values if len(v) >= 6]


def load_settings(env_file: Path | None = None) -> tuple[Settings, list[str]]:
    """Validated settings plus warnings about `FT_*` variables that match no setting.

    `env_file` replaces the default `.env`; a named file that does not exist is an error.
    """
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"env file '{env_file}' does not exist; pass an existing file to --env-file")
    dotenv_path = env_file or Path(".env")
    try:
        settings = Settings(_env_file=dotenv_path)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    # Settings whose meaning lives in their own module, checked as early as the others.
    metrics.best_model_metric(settings.metric_for_best_model, settings.problem_type)
    output_location(settings)
    checkpoint_location(settings)

    seen = dict(os.environ)
    if dotenv_path.is_file():
        seen.update({k: v or "" for k, v in dotenv_values(dotenv_path).items()})
    warnings = [
        f"{name} is not a setting and is ignored" + (f"; did you mean {match}?" if match else "")
        for name, match in unknown_prefixed_variables(seen)
    ]
    return settings, warnings


def describe_validation_error(exc: ValidationError) -> str:
    """One line: each bad variable, the value it had and what it accepts."""
    return "; ".join(_describe_one(error) for error in exc.errors())


def _describe_one(error: Any) -> str:
    loc = error.get("loc") or ()
    name = next((part for part in loc if isinstance(part, str) and part in Settings.model_fields), None)
    if name is None:
        # A whole-model check: its message already names the variables.
        return str(error["msg"]).removeprefix("Value error, ")
    variable = env_name(name)
    allowed = allowed_values(name)
    if error["type"] == "missing":
        return f"{variable} is not set; set it to {allowed}"
    value = error.get("input")
    shown = "<redacted>" if _without_none(Settings.model_fields[name].annotation) is SecretStr else repr(value)
    # Our own validators explain themselves; pydantic's type and bound messages only
    # restate what `allowed` already says.
    reason = f": {str(error['msg']).removeprefix('Value error, ')}" if error["type"] == "value_error" else ""
    return f"{variable}={shown} is invalid{reason}; expected {allowed}"


def allowed_values(name: str) -> str:
    """What a setting accepts, in words, from its type and bounds."""
    if name == "metric_for_best_model":  # the catalogue lives with the metrics
        return f"one of {', '.join(metrics.EVERY_METRIC)}"
    field = Settings.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("allowed"):
        return str(extra["allowed"])
    base = _without_none(field.annotation)
    if get_origin(base) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(base))
    if base is bool:
        return "true or false"
    if base is SecretStr:
        return "a token string"
    if base is Path:
        return "a directory path"
    if base in (int, float):
        kind = "an integer" if base is int else "a number"
        bounds = [_bound(meta) for meta in field.metadata]
        bounds = [b for b in bounds if b]
        return kind + (" " + " and ".join(bounds) if bounds else "")
    if any(isinstance(meta, annotated_types.MinLen) for meta in field.metadata):
        return "a non-empty string"
    return "a string"


def _bound(meta: Any) -> str | None:
    for cls, attr, symbol in (
        (annotated_types.Gt, "gt", ">"),
        (annotated_types.Ge, "ge", ">="),
        (annotated_types.Lt, "lt", "<"),
        (annotated_types.Le, "le", "<="),
    ):
        if isinstance(meta, cls):
            return f"{symbol} {getattr(meta, attr)}"
    return None


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _without_none(args[0])
    if hasattr(annotation, "__metadata__"):  # Annotated[...]
        return _without_none(get_args(annotation)[0])
    return annotation
