"""The HTTP API against a real server process, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import psycopg

import instar
from instar.maintenance.state_flows import StateFlows
from tests.conftest import POSTGRES, execute_raw, running_worker
from tests.web import web_app
from tests.web.conftest import Server, serve


def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code, body
    return body


# -- health, meta, the OpenAPI document ----------------------------------------------


def test_health_answers_without_a_token(server: Server) -> None:
    assert httpx.get(server.api("/health")).json() == {"status": "ok"}


def test_meta_gives_the_lifecycle_table_and_the_states_each_verb_applies_to(
    server: Server,
) -> None:
    with server.client(server.admin) as client:
        meta = client.get("/meta").json()
    assert meta["backend"] in ("sqlite", "postgresql")
    states = {s["state"]: s for s in meta["lifecycle"]["states"]}
    assert "running" in states["ready"]["moves_to"]
    assert states["completed"]["final"] is True
    verbs = {v["verb"]: v for v in meta["verbs"]}
    assert verbs["retry"]["from"] == ["failed"] and verbs["resume"]["from"] == ["paused"]
    assert "completed" not in verbs["cancel"]["from"]


def test_the_openapi_document_is_served_and_no_page_loads_scripts_from_another_host(
    server: Server,
) -> None:
    document = httpx.get(server.api("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/jobs/{job_id}/cancel" in document["paths"]
    for page in ("/docs", "/redoc", "/api/v1/docs"):
        assert httpx.get(f"{server.url}{page}").status_code == 404


# -- tokens ----------------------------------------------------------------------------


def test_a_request_without_a_token_is_refused_with_www_authenticate(server: Server) -> None:
    response = httpx.get(server.api("/jobs"))
    _problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_in_the_query_string_is_not_accepted(server: Server) -> None:
    _problem(httpx.get(server.api(f"/jobs?access_token={server.admin}")), 401, "unauthorized")


def test_a_revoked_token_is_refused_on_the_next_request(server: Server) -> None:
    secret = server.token("short-lived", "read")
    with server.client(secret) as client:
        assert client.get("/jobs").status_code == 200
        with instar.App(server.database) as app:
            assert app.engine.store.revoke_token("short-lived", app.clock.now())
        _problem(client.get("/jobs"), 401, "unauthorized")


def test_a_token_without_the_scope_gets_403_insufficient_scope(server: Server) -> None:
    with server.client(server.token("reader", "read")) as client:
        response = client.post("/jobs", json={"name": "hello"})
    body = _problem(response, 403, "insufficient_scope")
    assert "enqueue" in body["detail"]
    assert 'scope="enqueue"' in response.headers["www-authenticate"]


def test_a_token_limited_to_a_queue_acts_on_that_queue_only(server: Server) -> None:
    with server.client(server.token("mailer", "enqueue", "operate", queue="emails")) as client:
        assert client.post("/jobs", json={"name": "mail", "args": {"to": "a@b"}}).status_code == 201
        _problem(client.post("/jobs", json={"name": "hello"}), 403, "insufficient_scope")
    with server.client(server.admin) as admin:
        other = admin.post("/jobs", json={"name": "hello"}).json()
    with server.client(server.token("mailer2", "operate", queue="emails")) as client:
        _problem(client.post(f"/jobs/{other['id']}/cancel"), 403, "insufficient_scope")


def test_a_token_limited_to_a_queue_reads_that_queue_only(server: Server) -> None:
    with server.client(server.admin) as admin:
        other = admin.post("/jobs", json={"name": "hello"}).json()
        mail = admin.post(
            "/jobs", json={"name": "mail", "args": {"to": "a@b"}, "after": [other["id"]]}
        ).json()
        seen = admin.get(f"/jobs/{mail['id']}/dependencies").json()
        assert [j["id"] for j in seen] == [other["id"]]
    with server.client(server.token("mail-reader", "read", queue="emails")) as client:
        assert [j["id"] for j in client.get("/jobs").json()["jobs"]] == [mail["id"]]
        assert client.get(f"/jobs/{mail['id']}/dependencies").json() == []  # another queue
        assert client.get("/jobs", params={"queue": "emails"}).status_code == 200
        _problem(client.get("/jobs", params={"queue": "default"}), 403, "insufficient_scope")
        assert client.get(f"/jobs/{mail['id']}").json()["queue"] == "emails"
        for path in ("", "/events", "/steps", "/children", "/dependencies", "/awakeables"):
            _problem(client.get(f"/jobs/{other['id']}{path}"), 403, "insufficient_scope")
        events = client.get("/events").json()["events"]
        assert {e["job_id"] for e in events} == {mail["id"]}
        _problem(client.get("/events", params={"queue": "default"}), 403, "insufficient_scope")
        _problem(
            client.get("/events/stream", params={"queue": "default"}), 403, "insufficient_scope"
        )


def test_the_timeline_names_the_token_that_caused_each_event(server: Server) -> None:
    with server.client(server.token("ci-bot", "enqueue", "operate", "read")) as client:
        job = client.post("/jobs", json={"name": "hello"}).json()
        client.post(f"/jobs/{job['id']}/cancel")
        events = client.get(f"/jobs/{job['id']}/events").json()["events"]
    assert [(e["to_state"], e["actor"]) for e in events] == [
        ("ready", "ci-bot"),
        ("cancelled", "ci-bot"),
    ]


# -- enqueueing ------------------------------------------------------------------------


def test_enqueue_answers_201_with_the_job_and_its_location(server: Server) -> None:
    with server.client(server.admin) as client:
        response = client.post("/jobs", json={"name": "hello", "args": {"name": "ada"}})
        assert response.status_code == 201
        job = response.json()
        assert job["state"] == "ready" and job["args"] == {"name": "ada"}
        assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
        assert client.get(server.url + response.headers["location"]).json()["id"] == job["id"]


def test_a_replayed_key_returns_the_first_job_and_a_reused_key_is_refused(server: Server) -> None:
    with server.client(server.admin) as client:
        body = {"name": "hello", "args": {"name": "x"}, "key": "order-17"}
        first = client.post("/jobs", json=body)
        again = client.post("/jobs", json=body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        reused = client.post("/jobs", json={**body, "args": {"name": "y"}})
        _problem(reused, 422, "idempotency_key_reused")
        assert len(client.get("/jobs").json()["jobs"]) == 1


def test_concurrent_enqueues_share_commits_yet_each_gets_its_own_answer(server: Server) -> None:
    """Requests that arrive together are committed together; one naming a job
    that does not exist fails alone, the others' jobs stand."""
    other = server.token("other-bot", "enqueue", "read")

    def enqueue(i: int) -> tuple[int, int, dict[str, Any]]:
        token = other if i % 3 == 0 else server.admin
        body: dict[str, Any] = {"name": "hello", "args": {"name": f"n{i}"}}
        if i % 10 == 7:
            body["after"] = [999_999]  # no such job: 404, and only for this request
        with server.client(token) as own:
            response = own.post("/jobs", json=body)
        return i, response.status_code, response.json()

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(enqueue, range(120)))
    made = {i: body for i, status, body in answers if status == 201}
    refused = {i: body for i, status, body in answers if status != 201}
    assert set(refused) == {i for i in range(120) if i % 10 == 7}
    assert all(body["code"] == "job_not_found" for body in refused.values())
    assert all(made[i]["args"] == {"name": f"n{i}"} for i in made)
    assert len({body["id"] for body in made.values()}) == len(made) == 108
    with instar.App(server.database) as app:
        stored = {job.id: job for job in app.jobs(limit=500)}
        assert set(stored) == {body["id"] for body in made.values()}
        for i, body in made.items():  # each job's first event names its own token
            actor = app.history(body["id"])[0].actor
            assert actor == ("other-bot" if i % 3 == 0 else "root"), (i, actor)


def test_bad_requests_get_a_problem_and_change_nothing(server: Server) -> None:
    with server.client(server.admin) as client:
        _problem(client.post("/jobs", json={"name": "nobody"}), 422, "unknown_job_name")
        bad = _problem(
            client.post("/jobs", json={"name": "hello", "priority": "high"}),
            422,
            "validation_failed",
        )
        assert bad["errors"][0]["location"] == ["body", "priority"]
        _problem(
            client.post("/jobs", json={"name": "hello", "args": {"nope": 1}}),
            422,
            "invalid_payload",
        )
        _problem(client.post("/jobs", json={"name": "hello", "delay": -5}), 400, "invalid_option")
        _problem(
            client.post("/jobs", json={"name": "hello", "surprise": 1}), 422, "validation_failed"
        )
        raw = client.post(
            "/jobs",
            content=b'{"name": "hello", "delay": NaN}',
            headers={"content-type": "application/json"},
        )
        _problem(raw, 422, "validation_failed")
        _problem(
            client.post(
                "/jobs",
                content=b"name=hello",
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            415,
            "unsupported_media_type",
        )
        huge = {"name": "hello", "args": {"name": "x" * (3 * 1024 * 1024)}}
        _problem(client.post("/jobs", json=huge), 413, "payload_too_large")
        _problem(
            client.post(
                "/jobs", content=b"\xff\xfe{", headers={"content-type": "application/json"}
            ),
            400,
            "bad_request",
        )
        assert client.get("/jobs").json()["jobs"] == []


def test_a_bad_job_id_is_refused_with_its_location_but_only_after_the_token(
    server: Server,
) -> None:
    _problem(httpx.get(server.api("/jobs/abc")), 401, "unauthorized")
    with server.client(server.token("id-reader", "read")) as client:
        for bad in ("abc", "0", "-3", "1.5", str(2**63)):
            body = _problem(client.get(f"/jobs/{bad}"), 422, "validation_failed")
            assert body["errors"][0]["location"] == ["path", "job_id"]
        _problem(client.get("/jobs/424242"), 404, "job_not_found")


def test_a_batch_is_enqueued_whole_or_not_at_all(server: Server) -> None:
    with server.client(server.admin) as client:
        good = [{"name": "hello", "args": {"name": str(n)}} for n in range(3)]
        response = client.post("/jobs/batch", json={"jobs": good})
        assert response.status_code == 201 and response.json()["batch"] == 3
        broken = [*good, {"name": "hello", "args": {"nope": True}}]
        _problem(client.post("/jobs/batch", json={"jobs": broken}), 422, "invalid_payload")
        assert len(client.get("/jobs").json()["jobs"]) == 3


# -- listing ---------------------------------------------------------------------------


def test_pages_follow_one_another_while_new_jobs_arrive(server: Server) -> None:
    with server.client(server.admin) as client:
        ids = [client.post("/jobs", json={"name": "hello"}).json()["id"] for _ in range(7)]
        first = client.get("/jobs", params={"limit": 3}).json()
        client.post("/jobs", json={"name": "hello"})  # arrives between pages
        second = client.get("/jobs", params={"limit": 3, "page": first["next"]}).json()
        third = client.get("/jobs", params={"limit": 3, "page": second["next"]}).json()
    seen = [j["id"] for page in (first, second, third) for j in page["jobs"]]
    assert seen == sorted(ids, reverse=True)
    assert third["next"] is None


def test_jobs_filter_by_parent_and_by_creation_time(server: Server) -> None:
    with instar.App(server.database) as app:
        child = app.job(name="child")(web_app.hello)

        @app.job(name="fan_out")
        def fan_out(ctx: instar.Context) -> None:
            for i in range(3):
                ctx.spawn(child, name=f"c{i}")

        parent = fan_out.enqueue()
        app.run_worker(burst=True)
        created = [job.created_at for job in app.jobs(limit=10)]
    first, second, *_ = sorted(created)[1:]
    middle = first + (second - first) / 2  # between two jobs' times, equal to none
    with server.client(server.admin) as client:
        children = client.get("/jobs", params={"parent": parent.id}).json()["jobs"]
        assert sorted(j["args"]["name"] for j in children) == ["c0", "c1", "c2"]
        assert all(j["parent_id"] == parent.id for j in children)

        def times(**bound: str) -> list[datetime]:
            jobs = client.get("/jobs", params=bound).json()["jobs"]
            return sorted(datetime.fromisoformat(j["created_at"]) for j in jobs)

        assert times(created_after=middle.isoformat()) == [t for t in times() if t > middle]
        assert times(created_before=middle.isoformat()) == [t for t in times() if t < middle]
        assert len(times(created_before=middle.isoformat())) == 2
        naive = client.get("/jobs", params={"created_after": "2026-01-01T00:00:00"})
        _problem(naive, 400, "invalid_filter")
        _problem(client.get("/jobs", params={"parent": 0}), 422, "validation_failed")


def test_a_page_token_cannot_be_forged_or_carried_to_another_filter(server: Server) -> None:
    with server.client(server.admin) as client:
        for _ in range(3):
            client.post("/jobs", json={"name": "hello"})
        token = client.get("/jobs", params={"limit": 1}).json()["next"]
        _, signature = token.split(".")
        forged = json.dumps({"p": 10**9, "s": {"name": None, "queue": None, "state": []}})
        fake = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=") + "." + signature
        _problem(client.get("/jobs", params={"page": fake}), 400, "invalid_page_token")
        other = client.get("/jobs", params={"page": token, "state": "failed"})
        _problem(other, 400, "invalid_page_token")
        _problem(client.get("/jobs", params={"state": "sleeping"}), 400, "invalid_filter")


def test_jobs_filter_by_several_states(server: Server) -> None:
    with server.client(server.admin) as client:
        kept = client.post("/jobs", json={"name": "hello"}).json()
        gone = client.post("/jobs", json={"name": "hello"}).json()
        client.post(f"/jobs/{gone['id']}/cancel")
        both = client.get("/jobs", params=[("state", "ready"), ("state", "cancelled")]).json()
        ready = client.get("/jobs", params={"state": "ready"}).json()
    assert [j["id"] for j in both["jobs"]] == [gone["id"], kept["id"]]
    assert [j["id"] for j in ready["jobs"]] == [kept["id"]]


# -- verbs -----------------------------------------------------------------------------


def test_a_verb_with_a_stale_if_match_is_refused_with_412(server: Server) -> None:
    with server.client(server.admin) as client:
        job = client.post("/jobs", json={"name": "hello"}).json()
        etag = client.get(f"/jobs/{job['id']}").headers["etag"]
        paused = client.post(f"/jobs/{job['id']}/pause", headers={"If-Match": etag})
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        stale = client.post(f"/jobs/{job['id']}/cancel", headers={"If-Match": etag})
        body = _problem(stale, 412, "version_mismatch")
        assert client.get(f"/jobs/{job['id']}").json()["state"] == "paused"
        assert body["found"] > body["expected"]


def test_a_verbs_reason_is_kept_in_the_timeline_and_other_fields_are_refused(
    server: Server,
) -> None:
    with server.client(server.admin) as client:
        job = client.post("/jobs", json={"name": "hello"}).json()
        refused = client.post(f"/jobs/{job['id']}/cancel", json={"why": "spam"})
        body = _problem(refused, 422, "validation_failed")
        assert body["errors"][0]["location"] == ["body", "why"]
        assert client.get(f"/jobs/{job['id']}").json()["state"] == "ready"
        done = client.post(f"/jobs/{job['id']}/cancel", json={"reason": "spam\nsent twice"})
        assert done.status_code == 200
        events = client.get(f"/jobs/{job['id']}/events").json()["events"]
        assert events[-1]["detail"] == {"reason": "spam\nsent twice"}


def test_a_jobs_timeline_is_not_held_back_by_a_transaction_open_elsewhere(
    server: Server,
) -> None:
    """The global feed waits for older transactions to end (PostgreSQL hands out
    ids before commit); one job's timeline needs no such wait: its events are
    written under its row lock, in commit order."""
    with _open_transaction(server.database), server.client(server.admin) as client:
        job = client.post("/jobs", json={"name": "hello"}).json()
        client.post(f"/jobs/{job['id']}/cancel")
        events = client.get(f"/jobs/{job['id']}/events").json()["events"]
        assert [e["to_state"] for e in events] == ["ready", "cancelled"]
        after = client.get(f"/jobs/{job['id']}/events", params={"after": events[0]["id"]})
        assert [e["to_state"] for e in after.json()["events"]] == ["cancelled"]


@contextmanager
def _open_transaction(database: str) -> Iterator[None]:
    """A transaction left open: on PostgreSQL one that holds a transaction id."""
    if database.startswith("postgresql"):
        with psycopg.connect(POSTGRES) as pg:
            pg.execute("SELECT pg_current_xact_id()")
            yield
            pg.rollback()
    else:
        lite = sqlite3.connect(database.removeprefix("sqlite:///"))
        lite.execute("BEGIN")  # a read transaction: its snapshot stays open
        lite.execute("SELECT count(*) FROM jobs").fetchone()
        try:
            yield
        finally:
            lite.close()


def test_a_refused_verb_says_which_states_it_applies_to(server: Server) -> None:
    with server.client(server.admin) as client:
        job = client.post("/jobs", json={"name": "hello"}).json()
        body = _problem(client.post(f"/jobs/{job['id']}/retry"), 409, "invalid_transition")
    assert body["from"] == "ready" and body["allowed_from"] == ["failed"]
    assert "only a failed job can be retried" in body["detail"]


def test_fifty_concurrent_cancels_of_one_job_give_one_200_and_49_409(server: Server) -> None:
    with server.client(server.admin) as client:
        job = client.post("/jobs", json={"name": "hello"}).json()

    def cancel(_: int) -> int:
        with server.client(server.admin) as own:
            return own.post(f"/jobs/{job['id']}/cancel").status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = Counter(pool.map(cancel, range(50)))
    assert statuses == Counter({200: 1, 409: 49})


def test_cancelling_a_running_job_answers_202_then_it_ends_cancelled(server: Server) -> None:
    with instar.App(server.database) as app:
        web_app.handlers(app)
        with server.client(server.admin) as client, running_worker(app, concurrency=1):
            job = client.post("/jobs", json={"name": "slow"}).json()
            _wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["state"] == "running")
            response = client.post(f"/jobs/{job['id']}/cancel", json={"reason": "stuck"})
            assert response.status_code == 202
            assert response.json()["cancel_requested"] is True
            _wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["state"] == "cancelled")
            events = client.get(f"/jobs/{job['id']}/events").json()["events"]
            asked = [e for e in events if e["trigger"] == "cancel-requested"]
            assert [e["detail"] for e in asked] == [{"reason": "stuck"}]


# -- awakeables, queues, workers -----------------------------------------------------------


def test_an_awakeable_waits_in_the_inbox_and_resolving_it_moves_its_job_on(server: Server) -> None:
    with instar.App(server.database) as app:
        web_app.handlers(app)
        with server.client(server.admin) as client, running_worker(app, concurrency=1):
            job = client.post("/jobs", json={"name": "approval"}).json()
            path = f"/jobs/{job['id']}/awakeables"
            _wait_for(lambda: bool(client.get(path).json()))
            awakeable = client.get(path).json()[0]
            assert [a["id"] for a in client.get("/awakeables").json()] == [awakeable["id"]]
            with server.client(server.token("mail-only", "read", queue="emails")) as mailer:
                assert mailer.get("/awakeables").json() == []  # the job is on another queue
                refused = mailer.get(f"/awakeables/{awakeable['id']}")
                _problem(refused, 403, "insufficient_scope")
            resolver = server.token("approver", "resolve")
            with server.client(resolver) as approver:
                done = approver.post(
                    f"/awakeables/{awakeable['id']}/resolve", json={"value": {"by": "ada"}}
                )
                assert done.status_code == 200 and done.json()["state"] == "resolved"
                twice = approver.post(
                    f"/awakeables/{awakeable['id']}/reject", json={"reason": "too late"}
                )
                _problem(twice, 409, "awakeable_already_completed")
            _wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["state"] == "completed")
            assert client.get(f"/jobs/{job['id']}").json()["result"] == "approved by ada"
            assert client.get("/awakeables").json() == []
            resolved = client.get("/awakeables", params={"state": "resolved"}).json()
            assert [a["id"] for a in resolved] == [awakeable["id"]]
            missing = client.post("/awakeables/nope/resolve", json={})
            _problem(missing, 404, "awakeable_not_found")


def test_a_paused_queue_is_shown_paused_and_resumes(server: Server) -> None:
    with server.client(server.admin) as client:
        client.post("/jobs", json={"name": "mail", "args": {"to": "a@b"}})
        assert client.post("/queues/emails/pause").json() == {
            "queue": "emails",
            "paused": True,
            "changed": True,
        }
        time.sleep(0.2)
        emails = [q for q in client.get("/queues").json() if q["queue"] == "emails"]
        assert emails[0]["paused"] is True and emails[0]["counts"] == {"ready": 1}
        assert 0.2 <= emails[0]["oldest_ready_age"] < 30  # the mail has waited since enqueued
        assert client.post("/queues/emails/resume").json()["paused"] is False


def test_a_queue_with_no_ready_job_has_no_oldest_ready_age(server: Server) -> None:
    with instar.App(server.database) as app:
        web_app.handlers(app)
        app.enqueue("hello")
        app.run_worker(burst=True)
    with server.client(server.admin) as client:
        [default] = client.get("/queues").json()
        assert default["counts"] == {"completed": 1} and default["oldest_ready_age"] is None


def test_workers_show_the_leases_each_holds(server: Server) -> None:
    with instar.App(server.database) as app:
        web_app.handlers(app)
        with server.client(server.admin) as client, running_worker(app, concurrency=2) as w:
            job = client.post("/jobs", json={"name": "slow"}).json()
            _wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["state"] == "running")
            found = {x["id"]: x for x in client.get("/workers").json()}
            assert found[w.id]["leases"] == 1 and found[w.id]["concurrency"] == 2
            client.post(f"/jobs/{job['id']}/cancel")


# -- the event stream --------------------------------------------------------------------


def _frames(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    """Read ``count`` transition frames: each its id and parsed data."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            frames.append(current)
            current = {}
            if len(frames) == count:
                return frames
    return frames


def test_the_stream_resumed_with_last_event_id_misses_and_repeats_nothing(
    server: Server,
) -> None:
    with server.client(server.admin) as client:
        start = client.get("/events").json()["last"]
        stop = threading.Event()

        def keep_moving() -> None:
            with server.client(server.admin) as mover:
                while not stop.is_set():
                    job = mover.post("/jobs", json={"name": "hello"}).json()
                    mover.post(f"/jobs/{job['id']}/cancel")

        mover = threading.Thread(target=keep_moving)
        mover.start()
        try:
            with client.stream("GET", "/events/stream", params={"after": start}) as first:
                got = _frames(first, 10)  # then the connection drops mid-stream
            last = got[-1]["id"]
            headers = {"Last-Event-ID": str(last)}
            with client.stream("GET", "/events/stream", headers=headers) as second:
                got += _frames(second, 10)
        finally:
            stop.set()
            mover.join()
        everything = client.get("/events", params={"after": start, "limit": 1000}).json()
    ids = [f["id"] for f in got]
    assert ids == [e["id"] for e in everything["events"]][:20]
    assert all(f["event"] == "transition" and f["data"]["id"] == f["id"] for f in got)


def test_text_with_newlines_cannot_forge_a_frame(server: Server) -> None:
    with instar.App(server.database) as app:
        web_app.handlers(app)
        with server.client(server.admin) as client, running_worker(app, concurrency=1):
            start = client.get("/events").json()["last"]
            job = client.post("/jobs", json={"name": "approval"}).json()
            path = f"/jobs/{job['id']}/awakeables"
            _wait_for(lambda: bool(client.get(path).json()))
            awakeable = client.get(path).json()[0]
            reason = 'no\n\nid: 999999\nevent: transition\ndata: {"forged": true}\n\n'
            client.post(f"/awakeables/{awakeable['id']}/reject", json={"reason": reason})
            _wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["state"] == "failed")
            expected = client.get("/events", params={"after": start}).json()["events"]
            with client.stream("GET", "/events/stream", params={"after": start}) as stream:
                frames = _frames(stream, len(expected))
    assert [f["data"] for f in frames] == expected
    assert all(f["id"] != 999999 for f in frames)


def test_a_stream_resumed_from_before_pruned_events_starts_with_a_gap(server: Server) -> None:
    with instar.App(server.database) as app:
        web_app.handlers(app)
        old = app.enqueue_many("hello", [{}] * 3)
        for job in old:
            app.cancel(job.id)
        StateFlows(app.engine).run_once()
        pruned_through = app.last_event_id()
        kept = app.enqueue("hello")  # the newest job: never pruned on SQLite
        assert app.prune(older_than=0).total == 3
    with server.client(server.admin) as client:
        page = client.get("/events", params={"after": 0}).json()
        assert page["gap_through"] == pruned_through
        assert [e["job_id"] for e in page["events"]] == [kept.id]
        assert client.get("/events", params={"after": pruned_through}).json()["gap_through"] is None
        with client.stream("GET", "/events/stream", params={"after": 0}) as stream:
            gap, first = _frames(stream, 2)
        assert gap == {"event": "gap", "data": {"after": 0, "pruned_through": pruned_through}}
        assert first["data"]["job_id"] == kept.id and first["id"] > pruned_through
        with client.stream(
            "GET", "/events/stream", headers={"Last-Event-ID": str(pruned_through)}
        ) as stream:
            [resumed] = _frames(stream, 1)
        assert resumed["event"] == "transition" and resumed["data"]["job_id"] == kept.id


def test_a_stream_beyond_the_cap_gets_503_with_retry_after(database: str) -> None:
    from tests.web.conftest import serve, stop

    process, url = serve(database, "--no-auth", "--max-streams", "1")
    try:
        with (
            httpx.Client(base_url=f"{url}/api/v1", timeout=10) as client,
            client.stream("GET", "/events/stream") as held,
        ):
            assert held.status_code == 200
            refused = client.get("/events/stream")
            _problem(refused, 503, "unavailable")
            assert refused.headers["retry-after"].isdigit()
    finally:
        stop(process)


# -- bulk --------------------------------------------------------------------------------


def test_retry_all_matching_previews_then_applies_and_skips_what_the_table_refuses(
    server: Server,
) -> None:
    with server.client(server.admin) as client:
        ids = [client.post("/jobs", json={"name": "hello"}).json()["id"] for _ in range(5)]
        for job_id in ids[:3]:
            client.post(f"/jobs/{job_id}/cancel")
        body = {"verb": "cancel", "filter": {"name": "hello"}, "dry_run": True}
        preview = client.post("/bulk", json=body)
        assert preview.status_code == 200
        assert preview.json()["matching"] == 5 and preview.json()["allowed"] == 2
        assert preview.json()["by_state"] == {"cancelled": 3, "ready": 2}
        started = client.post("/bulk", json={**body, "dry_run": False})
        assert started.status_code == 202
        client.post("/jobs", json={"name": "hello"})  # after the preview: not touched
        progress = server.url + started.headers["location"]
        _wait_for(lambda: client.get(progress).json()["done"])
        final = client.get(progress).json()
        assert (final["applied"], final["refused"], final["error"]) == (2, 0, None)
        states = Counter(j["state"] for j in client.get("/jobs").json()["jobs"])
    assert states == Counter({"cancelled": 5, "ready": 1})


def test_a_bulk_operation_whose_server_died_is_taken_over_and_resumed_by_another(
    server: Server,
) -> None:
    with instar.App(server.database) as app:
        web_app.handlers(app)
        jobs = app.enqueue_many("hello", [{}] * 2_000)
    first, url = serve(server.database)
    try:
        with httpx.Client(base_url=f"{url}/api/v1", headers=_bearer(server.admin)) as client:
            started = client.post("/bulk", json={"verb": "cancel", "filter": {"name": "hello"}})
            path = started.headers["location"].removeprefix("/api/v1")
            _wait_for(lambda: client.get(path).json()["applied"] > 0, timeout=60)
    finally:
        first.kill()  # no chance to save anything more
        first.communicate()
    with server.client(server.admin) as client:
        left = client.get(path).json()
        assert not left["done"], "the operation ended before its server died: use more jobs"
        _age_heartbeats(server.database, seconds=3_600)  # the quiet minute has passed
        _wait_for(lambda: client.get(path).json()["done"], timeout=120)
        final = client.get(path).json()
    assert final["error"] is None
    # Jobs moved after the dead server's last save are not counted (at most a page).
    assert left["applied"] <= final["applied"] <= 2_000
    assert final["applied"] >= 2_000 - 200
    with instar.App(server.database) as app:
        for job in jobs:
            cancels = [e for e in app.history(job.id) if e.to_state == instar.State.CANCELLED]
            assert len(cancels) == 1, (job.id, cancels)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _age_heartbeats(database: str, seconds: float) -> None:
    """Make every bulk operation look as if its server had been quiet for ``seconds``."""
    execute_raw(database, "UPDATE bulk_operations SET heartbeat_at = heartbeat_at - ?", (seconds,))


def test_a_bulk_verb_on_an_empty_filter_needs_all_true(server: Server) -> None:
    with server.client(server.admin) as client:
        client.post("/jobs", json={"name": "hello"})
        refused = client.post("/bulk", json={"verb": "cancel", "dry_run": True})
        _problem(refused, 400, "invalid_filter")
        preview = client.post("/bulk", json={"verb": "cancel", "dry_run": True, "all": True})
        assert preview.json()["allowed"] == 1
        _problem(client.get("/bulk/nope"), 404, "bulk_not_found")


# -- stats -------------------------------------------------------------------------------


def test_state_counts_and_throughput_follow_what_jobs_do(server: Server) -> None:
    with server.client(server.admin) as client:
        ids = [client.post("/jobs", json={"name": "hello"}).json()["id"] for _ in range(3)]
        client.post("/jobs", json={"name": "mail", "args": {"to": "a@b"}})
        client.post(f"/jobs/{ids[0]}/cancel")
        with instar.App(server.database) as app:
            web_app.handlers(app)
            app.run_worker(burst=True, queues=["default"])

        def counted() -> bool:
            found = client.get("/stats/states").json()
            return bool(found["queues"].get("default", {}).get("completed") == 2)

        _wait_for(counted)
        found = client.get("/stats/states").json()
        assert found["queues"] == {
            "default": {"completed": 2, "cancelled": 1},
            "emails": {"ready": 1},
        }
        assert found["totals"] == {"completed": 2, "cancelled": 1, "ready": 1}
        flows = client.get("/stats/throughput", params={"window": "10m", "bucket": "5m"}).json()
        assert flows["bucket_seconds"] == 300 and len(flows["buckets"]) in (2, 3)
        entered = Counter[str]()
        for bucket in flows["buckets"]:
            entered.update(bucket["entered"])
        assert entered == Counter({"completed": 2, "cancelled": 1})
        bad = client.get("/stats/throughput", params={"window": "1y"})
        _problem(bad, 400, "invalid_filter")


def test_the_server_counts_finished_jobs_with_no_worker_running(server: Server) -> None:
    with server.client(server.admin) as client:
        ids = [client.post("/jobs", json={"name": "hello"}).json()["id"] for _ in range(2)]
        for job_id in ids:
            client.post(f"/jobs/{job_id}/cancel")

        def counted() -> bool:
            found = client.get("/stats/states").json()
            return bool(found["totals"].get("cancelled") == 2)

        _wait_for(counted)  # the server's own rollup, every 2 seconds


# -- tokens over HTTP ------------------------------------------------------------------------


def test_metrics_give_prometheus_the_counts_the_queues_and_the_workers(server: Server) -> None:
    with instar.App(server.database) as app:
        web_app.handlers(app)
        app.enqueue_many("hello", [{}] * 2)
        app.run_worker(burst=True)  # its maintenance rolls the timeline up
        app.enqueue("mail", {"to": "a@b"})
    reader = server.token("prometheus", "read")
    with server.client(reader) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(response.text.splitlines())
    assert 'instar_jobs{queue="default",state="completed"} 2.0' in lines
    assert 'instar_jobs{queue="emails",state="ready"} 1.0' in lines
    assert 'instar_jobs_finished_total{queue="default",state="completed"} 2.0' in lines
    assert any(
        line.startswith('instar_queue_oldest_ready_age_seconds{queue="emails"}') for line in lines
    )
    assert "instar_rollup_lag_events 1.0" in lines  # the mail's enqueue, not counted yet
    assert "instar_workers_alive 0.0" in lines
    with server.client() as anonymous:
        _problem(anonymous.get("/metrics"), 401, "unauthorized")


def test_an_admin_makes_lists_and_revokes_tokens_never_broader_than_its_own(
    server: Server,
) -> None:
    with server.client(server.admin) as admin:
        made = admin.post("/tokens", json={"name": "deployer", "scopes": ["enqueue"]})
        assert made.status_code == 201
        secret = made.json()["token"]
        with server.client(secret) as deployer:
            assert deployer.post("/jobs", json={"name": "hello"}).status_code == 201
            _problem(deployer.get("/tokens"), 403, "insufficient_scope")
        listed = {t["name"]: t for t in admin.get("/tokens").json()}
        assert listed["deployer"]["scopes"] == ["enqueue"]
        assert all("token" not in t and "digest" not in t for t in listed.values())
        assert admin.delete("/tokens/deployer").status_code == 204
        with server.client(secret) as deployer:
            _problem(deployer.post("/jobs", json={"name": "hello"}), 401, "unauthorized")
        _problem(admin.delete("/tokens/deployer"), 404, "token_not_found")
    limited = server.token("emails-admin", "admin", queue="emails")
    with server.client(limited) as admin:
        broader = admin.post("/tokens", json={"name": "anywhere", "scopes": ["read"]})
        _problem(broader, 400, "invalid_option")
        narrow = {"name": "mails", "scopes": ["enqueue"], "queue": "emails"}
        assert admin.post("/tokens", json=narrow).status_code == 201
