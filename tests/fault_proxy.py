"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the local S3 server.

It forwards each request unchanged, except a seeded random share of them, which it
answers with a fault instead, each kind in turn: 503 SlowDown, 500 InternalError, a dropped connection,
or silence until the client times out. `persistent` lets a test fail chosen requests
every time.
"""

from __future__ import annotations

import collections
import http.client
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("slow_down", "internal_error", "dropped", "timeout")
_XML = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message></Error>'
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    def __init__(
        self, upstream: str, *, rate: float, timeout_s: float, seed: int = 0,
        persistent: Callable[[str, str], bool] | None = None,
    ) -> None:  # fmt: skip
        self.upstream = urlsplit(upstream)
        self.rate = rate
        self.timeout_s = timeout_s
        self.persistent = persistent or (lambda method, path: False)
        self.counts: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def injected(self) -> int:
        return sum(self.counts[f] for f in FAULTS)

    def _fault_for(self, method: str, path: str) -> str | None:
        with self._lock:
            self.counts["requests"] += 1
            if self.persistent(method, path):
                fault = "internal_error"
            elif self._random.random() < self.rate:
                fault = FAULTS[self.injected % len(FAULTS)]  # every kind, in turn
            else:
                return None
            self.counts[fault] += 1
            return fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _relay(self) -> None:
                body = self._body()
                fault = proxy._fault_for(self.command, self.path)
                if fault in ("dropped", "timeout"):
                    if fault == "timeout":
                        time.sleep(proxy.timeout_s)
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None:
                    status, code = (503, "SlowDown") if fault == "slow_down" else (500, "InternalError")
                    payload = _XML.format(code=code).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload if self.command != "HEAD" else b"")
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
