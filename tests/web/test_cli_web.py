"""``instar token`` and ``instar serve`` run as subprocesses, the way a user runs them."""

from __future__ import annotations

import json

import httpx

from tests.acceptance.test_cli import instar
from tests.web.conftest import serve, stop


def test_a_token_made_on_the_command_line_is_shown_once_and_works_until_revoked(
    database: str,
) -> None:
    made = instar("token", "create", "deploy", "--scope", "read", "--database", database)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("instar_") and len(secret) >= 7 + 43
    listed = instar("token", "list", "--json", "--database", database)
    [row] = json.loads(listed.stdout)
    assert row["name"] == "deploy" and row["scopes"] == ["read"] and row["revoked_at"] is None
    assert secret not in listed.stdout
    process, url = serve(database)
    try:
        auth = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{url}/api/v1/jobs", headers=auth).status_code == 200
        assert instar("token", "revoke", "deploy", "--database", database).returncode == 0
        assert httpx.get(f"{url}/api/v1/jobs", headers=auth).status_code == 401
    finally:
        stop(process)
    again = instar("token", "create", "deploy", "--scope", "read", "--database", database)
    assert again.returncode == 2 and "never reused" in again.stderr


def test_token_options_that_make_no_sense_are_refused(database: str) -> None:
    unknown = instar("token", "create", "x", "--scope", "read,root", "--database", database)
    assert unknown.returncode == 2 and "unknown scope 'root'" in unknown.stderr
    actor = instar("token", "create", "system", "--scope", "read", "--database", database)
    assert actor.returncode == 2 and "choose another" in actor.stderr
    missing = instar("token", "revoke", "nobody", "--database", database)
    assert missing.returncode == 2 and "no live token" in missing.stderr


def test_serving_without_authentication_is_refused_beyond_loopback(database: str) -> None:
    refused = instar("serve", "--no-auth", "--host", "0.0.0.0", "--database", database)
    assert refused.returncode == 2 and "loopback" in refused.stderr


def test_without_authentication_requests_need_no_token_and_events_name_http(
    database: str,
) -> None:
    process, url = serve(database, "--no-auth")
    try:
        job = httpx.post(f"{url}/api/v1/jobs", json={"name": "hello"}).json()
        events = httpx.get(f"{url}/api/v1/jobs/{job['id']}/events").json()["events"]
        assert [e["actor"] for e in events] == ["http"]
    finally:
        log = stop(process)
    assert "WITHOUT authentication" in log


def test_token_commands_take_the_app_option_like_every_command(database: str) -> None:
    made = instar(
        "token", "create", "ci-bot", "--scope", "read,enqueue,operate",
        "--app", "tests.web.web_app:app", "--database", database,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    listed = instar("token", "list", "--app", "tests.web.web_app:app", "--database", database)
    assert "ci-bot" in listed.stdout
