"""Airflow discovers the provider through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_incremental import __version__
from airflow_provider_incremental.get_provider_info import get_provider_info

pytestmark = pytest.mark.integration


def test_airflow_providers_list_shows_the_provider(tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = Path(sys.executable).with_name("airflow")
    out = subprocess.run(
        [str(airflow), "providers", "list", "-o", "plain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("airflow-provider-incremental")]
    assert lines and __version__ in lines[0], out.stdout[-2000:]


def test_provider_info_lists_importable_modules() -> None:
    import importlib

    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-incremental"
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(kind, []):
            for module in entry["python-modules"]:
                importlib.import_module(module)
