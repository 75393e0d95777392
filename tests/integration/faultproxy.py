"""A loopback HTTP proxy that injects faults between the BigQuery client and the local emulator.

.. code-block:: python

    with FaultProxy(local_bigquery.endpoint, rate=0.2, seed=7) as proxy:
        ...  # point a connection's ``api_endpoint`` at proxy.url
    print(proxy.counts)  # Counter({'http_503': 4, 'drop_after': 3, ...})

On a fraction ``rate`` of the requests (seeded), one fault of a configurable mix:

* ``http_500`` / ``http_503`` / ``http_429``: an error response in BigQuery's JSON error format, sent
  BEFORE forwarding: nothing reached the emulator;
* ``drop_before``: the connection is reset before forwarding: nothing reached the emulator;
* ``drop_after``: the request is forwarded and applied by the emulator, then the connection is reset
  instead of answering: the client does not know that its job was created ("submitted twice because
  its response was lost");
* ``slow``: the request is forwarded and applied, and the response is held back ``slow_delay`` seconds
  (past the client's per-request timeout) before it is sent to whoever is still listening.

:meth:`FaultProxy.arm` queues targeted faults (``kind`` for the next request matching a predicate),
applied before the random ones. Only loopback is served and forwarded to; :meth:`FaultProxy.stop`
(or leaving the ``with`` block) ends every held-back response at once and closes the port.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

#: error faults: HTTP status, BigQuery error reason, google.rpc status
ERRORS: dict[str, tuple[int, str, str]] = {
    "http_500": (500, "backendError", "INTERNAL"),
    "http_503": (503, "backendError", "UNAVAILABLE"),
    "http_429": (429, "rateLimitExceeded", "RESOURCE_EXHAUSTED"),
}
KINDS = (*ERRORS, "drop_before", "drop_after", "slow")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}

Match = Callable[[str, str], bool]


@dataclass
class _Armed:
    kind: str
    match: Match
    times: int


@dataclass(frozen=True)
class Event:
    """One injected fault: when (seconds since start), which request and what was done to it."""

    at: float
    kind: str
    method: str
    path: str


class FaultProxy:
    """Forward loopback HTTP to ``upstream`` (a loopback URL), injecting faults on a fraction of requests.

    :param upstream: the emulator's endpoint, e.g. ``http://127.0.0.1:9050``.
    :param rate: the probability that a request gets a fault (0 disables random faults).
    :param seed: seeds the random choices (which requests, which fault).
    :param kinds: the fault mix: kind names (equal weights) or ``{kind: weight}``; see :data:`KINDS`.
    :param slow_delay: seconds a ``slow`` response is held back; keep it above the client's
        per-request timeout and small enough for fast tests.
    :param upstream_timeout: per-request timeout towards the emulator.
    """

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.2,
        seed: int = 0,
        kinds: Mapping[str, float] | tuple[str, ...] = KINDS,
        slow_delay: float = 3.0,
        upstream_timeout: float = 120.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname not in _LOOPBACK or parts.port is None:
            raise ValueError(f"upstream must be an http://<loopback>:<port> URL, got {upstream!r}")
        weights = dict(kinds) if isinstance(kinds, Mapping) else dict.fromkeys(kinds, 1.0)
        unknown = set(weights) - set(KINDS)
        if unknown or not weights:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; choose from {KINDS}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.rate = rate
        self.kinds = list(weights)
        self.weights = list(weights.values())
        self.slow_delay = slow_delay
        self.upstream_timeout = upstream_timeout
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.forwarded = 0
        self.upstream_errors = 0
        self.events: list[Event] = []
        #: every request that reached the emulator: (method, path, status)
        self.log: list[tuple[str, str, int]] = []
        self._rng = random.Random(seed)
        self._armed: list[_Armed] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = 0.0

    # -- life cycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: release held-back responses, close the listening socket, join the thread."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------------

    def arm(self, kind: str, match: Match | None = None, *, times: int = 1) -> None:
        """Inject ``kind`` into the next ``times`` requests for which ``match(method, path)`` is true."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {KINDS}")
        with self._lock:
            self._armed.append(_Armed(kind, match or (lambda _method, _path: True), times))

    def armed(self) -> int:
        """How many targeted faults are still waiting for their request."""
        with self._lock:
            return sum(a.times for a in self._armed)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{kind}={self.counts[kind]}" for kind in KINDS if self.counts[kind])
        return f"{self.total} fault(s) in {self.requests} request(s) [{kinds or 'none'}]"

    def _decide(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            kind: str | None = None
            for armed in self._armed:
                if armed.times > 0 and armed.match(method, path):
                    armed.times -= 1
                    kind = armed.kind
                    break
            self._armed = [a for a in self._armed if a.times > 0]
            if kind is None and self.rate > 0 and self._rng.random() < self.rate:
                kind = self._rng.choices(self.kinds, self.weights)[0]
            if kind is not None:
                self.counts[kind] += 1
                self.events.append(Event(time.monotonic() - self._started, kind, method, path))
            return kind

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.upstream_timeout)
        try:
            # The client's Host header is kept: the emulator builds upload URLs (Location) from it, and
            # they must lead back through the proxy.
            out = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
            if body is not None:
                out.append(("Content-Length", str(len(body))))
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in out:
                conn.putheader(key, value)
            conn.endheaders(body)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            with self._lock:
                self.forwarded += 1
                self.log.append((method, path, response.status))
            return response.status, response.reason, kept, data
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], proxy: FaultProxy
    ) -> None:
        self.proxy = proxy
        super().__init__(address, handler)

    def verify_request(self, request: object, client_address: object) -> bool:
        # Bound to 127.0.0.1 already; refuse anything else all the same.
        return isinstance(client_address, tuple) and client_address[0] in _LOOPBACK

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that gave up (timeouts) make writes fail; that is the point


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _proxy(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        kind = proxy._decide(self.command, self.path)
        if kind in ERRORS:
            status, reason, rpc_status = ERRORS[kind]
            message = f"Injected fault {kind} (nothing was applied)"
            error = {"message": message, "domain": "global", "reason": reason}
            payload = {"error": {"code": status, "message": message, "errors": [error], "status": rpc_status}}
            self._respond(
                status, [("Content-Type", "application/json; charset=UTF-8")], json.dumps(payload).encode()
            )
            return
        if kind == "drop_before":
            self._reset()
            return
        try:
            status, _reason, headers, data = proxy._forward(
                self.command, self.path, list(self.headers.items()), body
            )
        except OSError as err:
            with proxy._lock:
                proxy.upstream_errors += 1
            payload = {"error": {"code": 502, "message": f"fault proxy: upstream failed: {err}"}}
            self._respond(502, [("Content-Type", "application/json")], json.dumps(payload).encode())
            return
        if kind == "drop_after":
            self._reset()
            return
        if kind == "slow" and proxy._stopping.wait(proxy.slow_delay):
            self._reset()  # stopping: do not keep the client waiting
            return
        self._respond(status, headers, data)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length is not None else None

    def _respond(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        try:
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Abort the connection (RST): the client gets no response at all."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
