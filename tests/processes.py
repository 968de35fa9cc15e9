"""Running the installed ``rag`` command as a subprocess, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

Run = subprocess.CompletedProcess[str]


def rag_executable() -> str:
    local = REPO / ".venv" / "bin" / "rag"
    if local.exists():
        return str(local)
    found = shutil.which("rag")
    if found is None:
        pytest.skip("the rag command is not installed")
    return found


def rag_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without its RAG_* settings, offline, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    environ.update(env or {})
    return environ


def run_rag(workdir: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Run:
    return subprocess.run(
        [rag_executable(), *args], cwd=workdir, env=rag_environment(env), capture_output=True, text=True,
        timeout=600, input=stdin,
    )


def start_rag(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``rag ARGS`` running in the background, its stderr readable line by line."""
    return subprocess.Popen(
        [rag_executable(), *args], cwd=workdir, env=rag_environment(env), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )


def assert_clean_error(result: Run, *fragments: str) -> str:
    """A non-zero exit with exactly one ``error: ...`` line on stderr and no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]
