"""Structured logging: one renderer for our events and for every library's logs.

JSON lines on stdout when stdout is not a terminal (cluster log collectors parse
them), a readable console format when it is. transformers, datasets and stdlib
loggers are routed through the same formatter, so nothing escapes as plain text.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog
import structlog.tracebacks

from job.redaction import MASK, redact_text

LogFormat = Literal["auto", "json", "console"]


class _Constant:
    """Adds fixed fields (run id, rank) to every event, ours and foreign alike."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in self.fields.items():
            event.setdefault(key, value)
        return event


# Terminal control sequences: CSI (colours, `\x1b[1;32m`), OSC (titles, links) and the
# two-character escapes; a lone ESC goes too.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])?")


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return _ANSI.sub("", value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _plain_text(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drops terminal colour codes from every string of the event, however deep. Libraries
    colour their messages (transformers' load report, matplotlib), and a log collector
    would store the codes as text; the console renderer adds its own colours after this."""
    for key, value in list(event.items()):
        event[key] = _plain(value)
    return event


def use_json(log_format: LogFormat) -> bool:
    if log_format == "auto":
        return not sys.stdout.isatty()
    return log_format == "json"


class _Scrub:
    """Masks secret values in the rendered line, wherever they hide (messages, tracebacks,
    URLs in library errors), and the credentials inside every URL in it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, _logger: Any, _name: str, rendered: Any) -> Any:
        if isinstance(rendered, str):
            rendered = redact_text(rendered)
            for secret in self.secrets:
                rendered = rendered.replace(secret, MASK)
        return rendered


def configure_logging(
    *,
    log_format: LogFormat = "auto",
    level: str = "info",
    run_id: str | None = None,
    rank: int | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """(Re)configure logging for this process; safe to call more than once."""
    as_json = use_json(log_format)
    constant: dict[str, Any] = {}
    if run_id is not None:
        constant["run_id"] = run_id
    constant["rank"] = rank if rank is not None else int(os.environ.get("RANK", "0"))

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _Constant(constant),
    ]
    renderer: list[Any]
    if as_json:
        # Tracebacks as structured data inside the one JSON line; without frame
        # locals, which are noise and can hold secrets.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False, max_frames=30)
        )
        renderer = [tracebacks, _plain_text, structlog.processors.JSONRenderer()]
    else:
        renderer = [_plain_text, structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer, _Scrub(secrets)],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(_library_errors_as_warnings)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def route_library_logs(log_format: LogFormat) -> None:
    """Send transformers/datasets records to our handler, and silence their progress bars
    off a terminal, where they would be garbage between JSON lines.

    Separate from configure_logging so that config errors do not wait for these imports.
    """
    import datasets
    import huggingface_hub
    import transformers

    transformers.utils.logging.get_logger()  # makes the library attach its handler now, so we can drop it
    datasets.utils.logging.get_logger()
    for name in ("transformers", "datasets", "huggingface_hub", "accelerate"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(logging.WARNING)  # their INFO is per-file chatter
    logging.captureWarnings(True)
    # datasets' sort triggers a pyarrow deprecation no user can act on.
    warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)
    if use_json(log_format) or not sys.stdout.isatty():
        datasets.disable_progress_bars()
        huggingface_hub.utils.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


def _library_errors_as_warnings(record: logging.LogRecord) -> bool:
    """A library's error record precedes the exception the job turns into its own one-line
    error event; as a warning it stays visible without making a second error line."""
    if record.levelno >= logging.ERROR and not record.name.startswith("job"):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def get_logger(name: str = "job") -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
