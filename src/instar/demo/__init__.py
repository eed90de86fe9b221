"""``instar demo``: a short tour of the job lifecycle with real worker processes.

``handlers`` holds the jobs on the ``app`` the worker subprocesses load,
``processes`` starts and stops those workers, ``story`` enqueues the jobs and
steers the workers as an operator would (``run_demo``), and ``live`` draws the
live view and the final tables. What the tour promises is checked by
``tests/acceptance/test_demo.py``, not by the demo itself.
"""

from instar.demo.handlers import app
from instar.demo.story import run_demo

__all__ = ["app", "run_demo"]
