"""``instar.Client`` and ``instar.AsyncClient`` against a real server process."""

from __future__ import annotations

import asyncio

import pytest

import instar
from instar.client import ApiError
from tests.conftest import running_worker
from tests.web import web_app
from tests.web.conftest import Server


def test_the_client_enqueues_reads_and_acts_like_the_app(server: Server) -> None:
    with instar.Client(server.url, token=server.admin) as client:
        job = client.enqueue("hello", {"name": "ada"}, priority=3, key="k-1")
        assert (job.state, job.priority, job.args) == ("ready", 3, {"name": "ada"})
        assert client.enqueue("hello", {"name": "ada"}, key="k-1").id == job.id
        assert [j.id for j in client.jobs(state="ready")] == [job.id]
        paused = client.pause(job.id, if_version=job.version)
        with pytest.raises(instar.VersionMismatch) as stale:
            client.cancel(job.id, if_version=job.version)
        assert stale.value.found == paused.version
        with pytest.raises(instar.InvalidTransition) as refused:
            client.retry(job.id)
        assert refused.value.from_state == "paused"
        assert list(refused.value.allowed_from) == ["failed"]
        client.resume(job.id)
        assert [e.to_state for e in client.history(job.id)] == ["ready", "paused", "ready"]
        with pytest.raises(instar.JobNotFound):
            client.get(10**9)
        with pytest.raises(instar.UnknownJob):
            client.enqueue("nobody")
    with instar.Client(server.url) as anonymous, pytest.raises(ApiError) as denied:
        anonymous.jobs()
    assert (denied.value.status, denied.value.code) == (401, "unauthorized")


def test_the_client_waits_for_a_job_and_follows_its_events(server: Server) -> None:
    with (
        instar.App(server.database) as app,
        running_worker(web_app.handlers(app)),
        instar.Client(server.url, token=server.admin) as client,
    ):
        start = client.enqueue("hello").id
        job = client.enqueue("approval")
        assert client.wait(start, timeout=15).result == "hello world"
        seen = []
        for event in client.events(follow=True, job=job.id, timeout=15):
            seen.append(event.to_state)
            if event.to_state == "suspended":
                [awakeable] = client.awakeables(job.id)
                client.resolve(awakeable.id, {"by": "ada"})
            if event.to_state == "completed":
                break
        assert client.wait(job.id, timeout=15).result == "approved by ada"
    assert seen[0] == "ready" and seen[-1] == "completed" and "suspended" in seen


def test_the_async_client_does_the_same(server: Server) -> None:
    async def scenario() -> list[str]:
        async with instar.AsyncClient(server.url, token=server.admin) as client:
            job = await client.enqueue("hello")
            await client.cancel(job.id)
            with pytest.raises(instar.InvalidTransition):
                await client.cancel(job.id)
            return [e.to_state async for e in client.events(job=job.id)]

    assert asyncio.run(scenario()) == ["ready", "cancelled"]


def test_the_readme_client_example_runs(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.acceptance.test_readme import BLOCKS, run

    code = BLOCKS["HTTP API"].replace("http://127.0.0.1:8000", server.url)
    assert code != BLOCKS["HTTP API"]
    run(code, {"token": server.admin})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "ready -> ready needs ['failed']"
    assert printed[1].endswith("None -> ready root")
