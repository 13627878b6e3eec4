"""Logging: every line is JSON with run id and rank, library logs included; secrets masked."""

from __future__ import annotations

import json
import logging

import pytest

from job.logs import configure_logging, get_logger, route_library_logs


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_own_and_library_events_share_one_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", run_id="r-1", rank=3)
    route_library_logs("json")
    get_logger("job.test").info("thing.happened", rows=5)
    logging.getLogger("some.library").warning("plain stdlib message %s", 42)
    logging.getLogger("transformers.modeling_utils").warning("a transformers warning")
    events = lines(capsys)
    assert [e["event"] for e in events] == ["thing.happened", "plain stdlib message 42", "a transformers warning"]
    assert all(e["run_id"] == "r-1" and e["rank"] == 3 and "timestamp" in e and "level" in e for e in events)
    assert events[0]["rows"] == 5 and events[2]["logger"] == "transformers.modeling_utils"


def test_exceptions_are_one_json_line_with_a_structured_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", run_id="r-2")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger().exception("run.crashed")
    (event,) = lines(capsys)
    assert event["exception"][0]["exc_type"] == "RuntimeError" and event["exception"][0]["frames"]


def test_secrets_are_masked_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    token = "hf_abcdefSECRET123"
    configure_logging(log_format="json", run_id="r-3", secrets=[token])
    get_logger().info("loading", url=f"https://hub/api?token={token}")
    logging.getLogger("urllib3").warning("GET with Authorization: Bearer %s", token)
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        get_logger().exception("failed")
    out = capsys.readouterr().out
    assert token not in out and out.count("**********") >= 3


def test_console_format_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="console", run_id="r-4")
    get_logger().info("run.started", model="m")
    out = capsys.readouterr().out
    assert "run.started" in out and "model=m" in out and not out.startswith("{")
