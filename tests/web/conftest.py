"""A real ``instar serve`` process on a loopback port, on each backend."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import instar
from instar.web import tokens

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    database: str
    admin: str

    def api(self, path: str) -> str:
        return f"{self.url}/api/v1{path}"

    def token(self, name: str, *scopes: str, queue: str | None = None) -> str:
        """A new token with these scopes (made the way ``instar token create`` does)."""
        with instar.App(self.database) as app:
            return tokens.create(app.engine.store, name, scopes, queue, app.clock.now())

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(database: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``instar serve`` and wait until its health check answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "instar.cli.main",
            "serve",
            "--database",
            database,
            "--app",
            "tests.web.web_app:app",
            "--port",
            str(port),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"instar serve exited: {process.communicate()[1]}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"instar serve did not answer within 20 s: {stop(process)}")


def stop(process: subprocess.Popen[str]) -> str:
    """Stop the server; what it wrote on stderr."""
    process.terminate()
    try:
        return process.communicate(timeout=10)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[1]


@pytest.fixture
def server(database: str) -> Iterator[Server]:
    with instar.App(database) as app:
        app.migrate()
        admin = tokens.create(app.engine.store, "root", ["admin"], None, app.clock.now())
    process, url = serve(database)
    try:
        yield Server(url, database, admin)
    finally:
        log = stop(process)
    assert "Traceback" not in log, log
