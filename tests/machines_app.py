"""An app for the ``instar machines`` tests: the job a ticket's entry action
enqueues, and the guard its ``start`` transition asks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import instar

app = instar.App()


@app.job(name="ticket.notify")
def notify(ticket: str, priority: int) -> str:
    return f"{ticket} needs a fix at priority {priority}"


def staffed(context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Someone can take the ticket unless the event says no one is free."""
    return bool(data.get("staff", True))


GUARDS = {"staffed": staffed}
