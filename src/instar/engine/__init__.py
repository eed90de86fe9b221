"""The engine: the only writer of job state, and the read side beside it.

- ``door``: ``Engine``, through which every write passes, one transaction per
  logical change;
- ``moves``: ``plan_move``, the lifecycle table's check on every move;
- ``outcomes``: how a run ends, as a closed set of outcomes, and their moves;
- ``waiting``: what moves set off (dependencies, joins, signals);
- ``verbs``: the operator's verbs, retried when they lose a race;
- ``reads``: the read API; ``feed``: the event feed.
"""

from instar.engine.door import BatchResult, Engine, ReportsPartlyWritten
from instar.engine.moves import error_record, plan_move
from instar.engine.outcomes import (
    Cancelled,
    Outcome,
    Paused,
    Raised,
    Released,
    Returned,
    Suspended,
    outcome_moves,
    refused_report_moves,
)
from instar.engine.reads import Reader
from instar.engine.verbs import Operator

__all__ = [
    "BatchResult",
    "Cancelled",
    "Engine",
    "Operator",
    "Outcome",
    "Paused",
    "Raised",
    "Reader",
    "Released",
    "ReportsPartlyWritten",
    "Returned",
    "Suspended",
    "error_record",
    "outcome_moves",
    "plan_move",
    "refused_report_moves",
]
