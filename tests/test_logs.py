"""Logging: every line is JSON with run id and rank, library logs included; secrets masked;
no terminal colour codes."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
from conftest import ft_env, rows, run_cli, write

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


ANSI = "\x1b"


def strings(value: object) -> list[str]:
    """Every string inside a decoded JSON event, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_a_foreign_record_with_terminal_colours_comes_out_clean(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", run_id="r-5")
    logging.getLogger("transformers.modeling_utils").warning(
        "\x1b[1mLOAD REPORT\x1b[0m from: %s\n\x1b[38;5;208mMISSING\x1b[0m", "\x1b[3mtiny\x1b[0m"
    )
    get_logger().info("\x1b[31mred\x1b[39m", detail={"nested": ["\x1b[1;32mbold green\x1b[0m"]})
    out = capsys.readouterr().out
    assert ANSI not in out and "\\u001b" not in out
    first, second = [json.loads(line) for line in out.splitlines()]
    assert first["event"] == "LOAD REPORT from: tiny\nMISSING"
    assert second["event"] == "red" and second["detail"] == {"nested": ["bold green"]}


def test_a_warning_with_terminal_colours_comes_out_clean(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", run_id="r-6")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(False)  # an earlier test's capture outlived pytest's own warning catcher
        route_library_logs("json")
        try:
            warnings.warn("\x1b[33mcareful\x1b[0m", UserWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
    out = capsys.readouterr().out
    assert "careful" in out and ANSI not in out and "\\u001b" not in out


@pytest.mark.slow
def test_a_real_run_prints_only_clean_json_lines(tmp_path: Path, tiny_model: Path) -> None:
    """The tiny model has no classification head: transformers prints its load report
    (coloured on a terminal), and the charts make matplotlib log about its font cache."""
    data = write(tmp_path / "d" / "train.csv", rows("binary", 40))
    env = ft_env(tmp_path, tiny_model, data.parent, FT_RUN_ID="clean", FT_MAX_STEPS="2", FT_BATCH_SIZE="16")
    result, events = run_cli(env=env, cwd=tmp_path)  # every stdout line parses as JSON, or this fails
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ANSI not in result.stdout and "\\u001b" not in result.stdout
    assert not [s for e in events for s in strings(e) if ANSI in s]
    assert any("LOAD REPORT" in e["event"] for e in events)  # the report was logged, clean
