"""Start and stop the local BigQuery emulator (``local-bigquery``) as a sidecar server.

The emulator needs Python >= 3.12 and a newer FastAPI than Airflow allows, so it runs from its own
virtualenv, created on first use, as a separate process on a free loopback port with a fresh data
directory. Only the endpoint differs from production: clients talk to it through the real
``google-cloud-bigquery`` REST client.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

EMULATOR_VERSION = "0.3.2"
#: Pinned for offline use: 0.4.x downloads DuckDB extensions from the internet at start-up.
EMULATOR_REQUIREMENTS = (
    f"local-bigquery=={EMULATOR_VERSION}",
    "duckdb==1.5.5",
    "duckdb-extensions==1.5.5",
    "duckdb-extension-ducklake==1.5.5",
    "duckdb-extension-icu==1.5.5",
    "duckdb-extension-spatial==1.5.5",
)
DUCKDB_EXTENSIONS = ("ducklake", "icu", "spatial")
DEFAULT_PROJECT = "local-project"
ENV_HOST = "BIGQUERY_EMULATOR_HOST"
ENV_VENV = "AIRFLOW_INCREMENTAL_EMULATOR_VENV"
ENV_PYTHON = "AIRFLOW_INCREMENTAL_EMULATOR_PYTHON"


class EmulatorError(RuntimeError):
    """The local BigQuery emulator could not be installed or started."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airflow-provider-incremental"


def venv_dir() -> Path:
    return Path(os.environ.get(ENV_VENV) or cache_dir() / f"local-bigquery-{EMULATOR_VERSION}")


def _python_version(python: str) -> tuple[int, int] | None:
    """Return the (major, minor) of an interpreter that really starts, else ``None``.

    pyenv shims exist on PATH for versions that are not selected and refuse to run.
    """
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def find_python() -> tuple[str, tuple[int, int]]:
    """Find a Python 3.13 (preferred) or 3.12 interpreter for the emulator's virtualenv."""
    candidates: list[str] = []
    if os.environ.get(ENV_PYTHON):
        candidates.append(os.environ[ENV_PYTHON])
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for minor in ("13", "12"):
        candidates += sorted(str(p) for p in Path(pyenv_root).glob(f"versions/3.{minor}.*/bin/python"))[::-1]
        candidates += [f"/usr/bin/python3.{minor}", f"/usr/local/bin/python3.{minor}", f"python3.{minor}"]
    if sys.version_info >= (3, 12):
        candidates.append(sys.executable)
    for candidate in candidates:
        version = _python_version(candidate)
        if version is not None and version >= (3, 12):
            return candidate, version
    raise EmulatorError(
        "The local BigQuery emulator needs Python 3.13 (or 3.12) and none was found. Install one "
        "(e.g. `pyenv install 3.13`, or `apt-get install python3.13`) or point "
        f"{ENV_PYTHON} at its interpreter."
    )


def ensure_venv() -> Path:
    """Create the emulator's virtualenv on first use and return its ``local-bigquery`` executable."""
    venv = venv_dir()
    exe = venv / "bin" / "local-bigquery"
    marker = venv / ".airflow-provider-incremental-ready"
    if marker.exists() and exe.exists():
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait, then reuse
        if marker.exists() and exe.exists():
            return exe
        python, version = find_python()
        log.warning("Building the local BigQuery emulator virtualenv in %s (one time, ~30 s)", venv)
        shutil.rmtree(venv, ignore_errors=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if version < (3, 13):
            pip.append("--ignore-requires-python")
        steps = [
            [python, "-m", "venv", str(venv)],
            [*pip, *EMULATOR_REQUIREMENTS],
            # The extensions install into ~/.duckdb per HOME; without them every request fails.
            [
                str(venv / "bin" / "python"),
                "-c",
                f"from duckdb_extensions import import_extension as i\nfor x in {DUCKDB_EXTENSIONS!r}: i(x)",
            ],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                raise EmulatorError(
                    f"Building the emulator virtualenv failed at `{' '.join(step[:4])} ...`:\n"
                    f"{result.stderr[-2000:]}"
                )
        marker.write_text(" ".join(EMULATOR_REQUIREMENTS) + "\n")
    return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(endpoint: str, project: str, timeout: float = 2.0) -> bool:
    """True when the emulator serves the BigQuery REST API at ``endpoint``."""
    url = f"{endpoint}/bigquery/v2/projects/{project}/datasets"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the emulator if the process that started it dies (no orphans after SIGKILL)."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalBigQuery:
    """A local BigQuery emulator server, started on a free loopback port and always stopped.

    .. code-block:: python

        with LocalBigQuery() as bq:
            client = bigquery.Client(project=bq.project, client_options={"api_endpoint": bq.endpoint}, ...)

    If ``BIGQUERY_EMULATOR_HOST`` is set, that server is reused and never stopped by this object.

    :param project: the project id the emulator serves.
    :param data_dir: where the emulator keeps its data; a fresh temporary directory by default
        (removed on stop).
    :param port: the REST port; a free one by default.
    :param startup_timeout: seconds to wait for the server to answer.
    :param detach: leave the server running when this process exits (for ``airflow-incremental-local up``).
    """

    def __init__(
        self,
        *,
        project: str = DEFAULT_PROJECT,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        startup_timeout: float = 60.0,
        detach: bool = False,
    ) -> None:
        self.project = project
        self.data_dir = Path(data_dir) if data_dir else None
        self.port = port
        self.startup_timeout = startup_timeout
        self.detach = detach
        self.endpoint = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._own_data_dir = False

    @property
    def reused(self) -> bool:
        """True when an already running server (``BIGQUERY_EMULATOR_HOST``) is being used."""
        return self.process is None and bool(self.endpoint)

    def start(self) -> LocalBigQuery:
        existing = os.environ.get(ENV_HOST)
        if existing:
            self.endpoint = existing if "://" in existing else f"http://{existing}"
            if not answers(self.endpoint, self.project, timeout=5):
                raise EmulatorError(f"{ENV_HOST}={existing} is set but no BigQuery emulator answers there")
            log.info("Reusing the BigQuery emulator at %s (%s is set)", self.endpoint, ENV_HOST)
            return self
        exe = ensure_venv()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="local-bigquery-"))
            self._own_data_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        cmd = [
            str(exe),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--grpc-port",
            str(free_port()),
            "--project",
            self.project,
            "--data-dir",
            str(self.data_dir / "data"),
        ]
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                cmd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=os.setsid if self.detach else _die_with_parent,  # noqa: PLW1509
            )
        deadline = time.monotonic() + self.startup_timeout
        while not answers(self.endpoint, self.project, timeout=1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise EmulatorError(f"The local BigQuery emulator did not start on {self.endpoint}:\n{tail}")
            time.sleep(0.1)
        log.info(
            "Local BigQuery emulator up at %s (project %s, pid %s)", self.endpoint, self.project, self.pid
        )
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its temporary data."""
        if self.process is not None:
            stop_process_group(self.process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self.process = None
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if self.log_path is not None:
                self.log_path.unlink(missing_ok=True)

    def connection(self) -> dict[str, Any]:
        """The Airflow connection (JSON form) that points the provider's hook at this server."""
        return {
            "conn_type": "google_cloud_platform",
            "extra": {"project": self.project, "api_endpoint": self.endpoint, "is_anonymous": True},
        }

    def airflow_env(self, conn_id: str = "google_cloud_default") -> dict[str, str]:
        """Environment variables that make ``conn_id`` point at this server."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(self.connection())}

    def __enter__(self) -> LocalBigQuery:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_process_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process group, wait up to ``timeout`` seconds, then SIGKILL it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
