"""The README's curl session, replayed command by command against a real
``instar serve`` process: every answer it shows is the answer the server gives
(``...`` stands for the part the README leaves out)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.web.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PLACEHOLDER = "instar_3k9V..."
TASKS = '''
import instar

app = instar.App()


@app.job()
def resize(path: str) -> None:
    """Resize the image at ``path``."""
'''


def session() -> list[tuple[str, str]]:
    """Each command of the README's first HTTP API block (``$`` lines, with
    their ``\\`` continuations) and the output the README shows after it,
    comments (``#`` after two spaces) left out and lines joined."""
    section = README.split("## HTTP API", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block is not None, "the HTTP API section has no session block"
    steps: list[tuple[str, list[str]]] = []
    continued = False
    for line in block.group(1).splitlines():
        if line.startswith("$ ") or continued:
            text = line[2:] if line.startswith("$ ") else line.strip()
            if continued:
                command, shown = steps[-1]
                steps[-1] = (command[:-1].rstrip() + " " + text, shown)
            else:
                steps.append((text, []))
            continued = line.rstrip().endswith("\\")
            continue
        steps[-1][1].append(re.split(r"\s{2,}#", line, maxsplit=1)[0].strip())
    return [(command, "".join(shown)) for command, shown in steps]


def matches(shown: str, output: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, "".join(line.strip() for line in output.splitlines())) is not None


def test_the_readme_curl_session_gives_the_answers_it_shows(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k != "INSTAR_DATABASE"}
    env["PYTHONPATH"] = str(ROOT)
    token = ""
    server: subprocess.Popen[bytes] | None = None
    try:
        for written, shown in session():
            command = _runnable(written, port, token)
            if command.startswith("export "):
                name, _, value = command.removeprefix("export ").partition("=")
                env[name] = value.strip('"')
                continue
            if command.endswith("&"):
                # exec: the shell becomes the server, so that terminate() stops it.
                server = subprocess.Popen(
                    f"exec {command[:-1]}",
                    shell=True,
                    cwd=tmp_path,
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
                _wait_until_serving(f"http://localhost:{port}/api/v1/health")
                continue
            done = subprocess.run(
                command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
            )
            if "token create" in command:
                token = done.stdout.strip()
                assert token.startswith("instar_") and len(token) > 30, done
                continue
            expected = shown.replace(PLACEHOLDER, token)
            assert matches(expected, done.stdout), (
                f"$ {command}\nREADME: {expected}\ngot: {done.stdout}"
            )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert token and server is not None, "the session made no token or started no server"


def _runnable(command: str, port: str, token: str) -> str:
    """The README's command as this test runs it: Instar's CLI through this
    Python, a free port, the token just made, and a stream read for two seconds."""
    command = command.replace("8000", port).replace(PLACEHOLDER, token)
    if command.startswith("instar "):
        command = f"{sys.executable} -m instar.cli.main" + command.removeprefix("instar")
    return command.replace("curl -sN", "curl -sN --max-time 2", 1)


def _wait_until_serving(health: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{health} did not answer")
