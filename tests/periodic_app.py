"""Periodic jobs for the CLI tests (``instar periodic``)."""

from __future__ import annotations

from datetime import datetime

import instar

app = instar.App()


@app.periodic("0 * * * *", name="reports.hourly")
def hourly(slot: datetime) -> str:
    return slot.isoformat()


@app.periodic("30 2 * * *", tz="Europe/Paris", name="reports.nightly", catch_up="none")
def nightly(slot: datetime) -> str:
    return slot.isoformat()
