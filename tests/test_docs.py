"""README, profiles and code say the same thing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from dotenv import dotenv_values

from job.errors import ExitCode
from job.settings import Settings, env_name
from job.settings_doc import splice

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_settings_table_matches_the_settings_class() -> None:
    assert splice(README) == README, "README settings table is stale: run `make docs`"
    for name in Settings.model_fields:
        assert f"| `{env_name(name)}` |" in README


def test_exit_code_table_matches_the_code() -> None:
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", README, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}


def test_profiles_only_set_real_settings() -> None:
    known = {env_name(name) for name in Settings.model_fields}
    for profile in (ROOT / "job" / "profiles").glob("*.env"):
        assert set(dotenv_values(profile)) <= known, profile


def test_make_help_lists_the_documented_targets() -> None:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("run", "test", "lint", "docs", "install", "clean"):
        assert f"make {target} " in out
