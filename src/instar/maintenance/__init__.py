"""Maintenance: small services the leading worker runs, each with a ``run_once``.

``timers`` (start times, retry times, durable sleeps and signal timeouts),
``pause_timeouts``, ``lease_rescue`` (lost workers) and ``waiters`` (jobs
whose awaited jobs have ended, suspended jobs with nothing left to wake
them), ``state_flows`` (the timeline rolled up by minute, queue and state).
``runner.Maintenance`` runs them in turn while it holds the ``maintenance``
leadership.
"""
