"""The embedded default: the emulator starts, answers, and never outlives its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from airflow_provider_incremental.local import EmulatorError, LocalBigQuery
from airflow_provider_incremental.local.emulator import answers

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def _wait_dead(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_context_manager_starts_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    with LocalBigQuery(project="ctx-project") as bq:
        assert bq.endpoint.startswith("http://127.0.0.1:")
        assert answers(bq.endpoint, "ctx-project")
        pid = bq.pid
        data_dir = bq.data_dir
        assert pid is not None and _alive(pid)
    assert _wait_dead(pid)
    assert data_dir is not None and not data_dir.exists()


def test_stopped_even_when_the_body_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    pid = None
    with pytest.raises(KeyboardInterrupt), LocalBigQuery() as bq:
        pid = bq.pid
        raise KeyboardInterrupt  # what Ctrl-C raises
    assert pid is not None and _wait_dead(pid)


def test_no_orphan_when_owner_is_killed(tmp_path: object) -> None:
    """SIGKILL of the process that started the emulator takes the emulator down too."""
    script = textwrap.dedent(
        """
        import os, sys, time
        os.environ.pop("BIGQUERY_EMULATOR_HOST", None)
        from airflow_provider_incremental.local import LocalBigQuery
        bq = LocalBigQuery().start()
        print(bq.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    emulator_pid = int(owner.stdout.readline())
    assert _alive(emulator_pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert _wait_dead(emulator_pid), "the emulator outlived its owner"


def test_reuses_server_from_environment(
    local_bigquery: LocalBigQuery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", local_bigquery.endpoint.removeprefix("http://"))
    with LocalBigQuery(project=local_bigquery.project) as reused:
        assert reused.reused and reused.pid is None
        assert reused.endpoint == local_bigquery.endpoint
    assert answers(local_bigquery.endpoint, local_bigquery.project), "reusing must not stop the server"


def test_environment_pointing_nowhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9")
    with pytest.raises(EmulatorError, match=r"BIGQUERY_EMULATOR_HOST=127\.0\.0\.1:9"):
        LocalBigQuery().start()


def test_console_script_up_status_down(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("BIGQUERY_EMULATOR_HOST", None)
    cli = [sys.executable, "-m", "airflow_provider_incremental.local.cli"]
    up = subprocess.run([*cli, "up"], env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    assert "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT" in up.stdout
    try:
        status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and "running at http://127.0.0.1:" in status.stdout
    finally:
        down = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "Stopped" in down.stdout
    status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=30)
    assert status.returncode == 1 and "not running" in status.stdout
