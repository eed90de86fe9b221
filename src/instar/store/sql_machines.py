"""The durable machines' reads and writes, written once for both SQL backends
over their ``machines.sql`` (``instar.machines`` decides; this only stores)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any

from instar.store.contract import HistoryRow, InstanceRow, RefusalRow, Reply, TimerRow


def _instance(row: Sequence[Any]) -> InstanceRow:
    return InstanceRow(
        machine=row[0],
        key=row[1],
        version=int(row[2]),
        state=row[3],
        context_json=row[4],
        seq=int(row[5]),
        final=bool(row[6]),
        created_at=float(row[7]),
        updated_at=float(row[8]),
    )


def _history(row: Sequence[Any]) -> HistoryRow:
    return HistoryRow(
        machine=row[0],
        key=row[1],
        seq=int(row[2]),
        at=float(row[3]),
        kind=row[4],
        event=row[5],
        from_state=row[6],
        to_state=row[7],
        data_json=row[8],
        context_json=row[9],
        actor=row[10],
        transition=None if row[11] is None else int(row[11]),
        version=int(row[12]),
        detail_json=row[13],
    )


def _timer(row: Sequence[Any]) -> TimerRow:
    return TimerRow(int(row[0]), row[1], row[2], row[3], row[4], float(row[5]), int(row[6]))


def _refusal(row: Sequence[Any]) -> RefusalRow:
    return RefusalRow(
        int(row[0]), row[1], row[2], float(row[3]), row[4], row[5], row[6], row[7], row[8]
    )


def _history_params(row: HistoryRow) -> dict[str, Any]:
    params = asdict(row)
    params["data"] = params.pop("data_json")
    params["context"] = params.pop("context_json")
    params["detail"] = params.pop("detail_json")
    return params


class MachineReadsSQL:
    """Reads of ``MachineReads`` for a store with ``Q`` and ``_read``."""

    Q: Any
    _read: Callable[[], AbstractContextManager[Any]]

    def machine_definitions(self) -> list[tuple[str, int, str, float]]:
        with self._read() as conn:
            rows = conn.execute(self.Q["machine_definitions_all"]).fetchall()
        return [(r[0], int(r[1]), r[2], float(r[3])) for r in rows]

    def definition_body(self, name: str, version: int | None) -> tuple[int, str] | None:
        with self._read() as conn:
            return _definition(conn, self.Q, name, version)

    def get_instance(self, machine: str, key: str) -> InstanceRow | None:
        with self._read() as conn:
            row = conn.execute(
                self.Q["machine_instance_get"], {"machine": machine, "key": key}
            ).fetchone()
        return None if row is None else _instance(row)

    def list_instances(
        self, machine: str, state: str | None, after: str | None, limit: int
    ) -> list[InstanceRow]:
        params = {"machine": machine, "state": state, "after": after, "limit": limit}
        with self._read() as conn:
            rows = conn.execute(self.Q["machine_instances_list"], params).fetchall()
        return [_instance(r) for r in rows]

    def count_instances(self, machine: str) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(self.Q["machine_instance_counts"], {"machine": machine})
            return {r[0]: int(r[1]) for r in rows.fetchall()}

    def history(
        self, machine: str, key: str, since_seq: int = 0, last: int | None = None
    ) -> list[HistoryRow]:
        params = {"machine": machine, "key": key, "since": since_seq, "last": last}
        query = "machine_history_since" if last is None else "machine_history_last"
        with self._read() as conn:
            return [_history(r) for r in conn.execute(self.Q[query], params).fetchall()]

    def refusals(self, machine: str, key: str, limit: int) -> list[RefusalRow]:
        params = {"machine": machine, "key": key, "limit": limit}
        with self._read() as conn:
            rows = conn.execute(self.Q["machine_refusals_of"], params).fetchall()
        return [_refusal(r) for r in rows]

    def timers_of(self, machine: str, key: str) -> list[TimerRow]:
        with self._read() as conn:
            rows = conn.execute(self.Q["machine_timers_of"], {"machine": machine, "key": key})
            return [_timer(r) for r in rows.fetchall()]

    def due_machine_timers(self, now: float, limit: int) -> list[TimerRow]:
        with self._read() as conn:
            rows = conn.execute(self.Q["machine_timers_due"], {"now": now, "limit": limit})
            return [_timer(r) for r in rows.fetchall()]

    def next_machine_timer_at(self) -> float | None:
        with self._read() as conn:
            row = conn.execute(self.Q["machine_timer_next"]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def machine_retentions(self) -> list[tuple[str, int | None, float | None]]:
        with self._read() as conn:
            rows = conn.execute(self.Q["machine_retentions"]).fetchall()
        return [(r[0], r[1], None if r[2] is None else float(r[2])) for r in rows]


def _definition(conn: Any, q: Any, name: str, version: int | None) -> tuple[int, str] | None:
    if version is None:
        row = conn.execute(q["machine_definition_latest"], {"name": name}).fetchone()
    else:
        params = {"name": name, "version": version}
        row = conn.execute(q["machine_definition_get"], params).fetchone()
    return None if row is None else (int(row[0]), row[1])


class MachineWritesSQL:
    """Writes of ``MachineWrites`` for a transaction with ``conn``, ``Q`` and ``now``."""

    conn: Any
    Q: Any
    now: float
    store: Any

    def save_definition(self, name: str, version: int, body: str, digest: str) -> str | None:
        params = {"name": name, "version": version, "body": body, "digest": digest, "now": self.now}
        if self.conn.execute(self.Q["machine_definition_save"], params).rowcount == 1:
            return None
        row = self.conn.execute(
            self.Q["machine_definition_get"], {"name": name, "version": version}
        ).fetchone()
        return str(row[2])

    def definition_body(self, name: str, version: int | None) -> tuple[int, str] | None:
        return _definition(self.conn, self.Q, name, version)

    def lock_instance(self, machine: str, key: str) -> InstanceRow | None:
        row = self.conn.execute(
            self.Q["machine_instance_lock"], {"machine": machine, "key": key}
        ).fetchone()
        return None if row is None else _instance(row)

    def insert_instance(self, row: InstanceRow) -> bool:
        params = _instance_params(row, self.now)
        return bool(self.conn.execute(self.Q["machine_instance_insert"], params).rowcount == 1)

    def update_instance(self, row: InstanceRow, expect_seq: int) -> bool:
        params = _instance_params(row, self.now)
        params["expect_seq"] = expect_seq
        # Rows, not rowcount: in a pipelined transaction rowcount is -1 until a sync.
        return len(self.conn.execute(self.Q["machine_instance_update"], params).fetchall()) == 1

    def append_history(self, rows: Sequence[HistoryRow]) -> None:
        if rows:
            self.conn.cursor().executemany(
                self.Q["machine_history_insert"], [_history_params(r) for r in rows]
            )

    def history_entry(self, machine: str, key: str, seq: int) -> HistoryRow | None:
        params = {"machine": machine, "key": key, "seq": seq}
        row = self.conn.execute(self.Q["machine_history_entry"], params).fetchone()
        return None if row is None else _history(row)

    def arm_timers(self, timers: Sequence[TimerRow]) -> None:
        if timers:
            params = [asdict(t) for t in timers]
            for p in params:
                del p["id"]
            self.conn.cursor().executemany(self.Q["machine_timers_arm"], params)

    def cancel_timers(self, machine: str, key: str, states: Sequence[str] | None) -> None:
        if states is None:
            self.conn.execute(self.Q["machine_timers_cancel_all"], {"machine": machine, "key": key})
        elif states:
            params = {"machine": machine, "key": key, "states": self.store._sql_list(states)}
            self.conn.execute(self.Q["machine_timers_cancel"], params)

    def take_timer(self, timer_id: int) -> bool:
        return bool(self.conn.execute(self.Q["machine_timer_take"], {"id": timer_id}).rowcount == 1)

    def add_refusal(self, row: RefusalRow, keep: int) -> None:
        params = asdict(row)
        del params["id"]
        params["now"] = params.pop("at")
        self.conn.execute(self.Q["machine_refusal_insert"], params)
        trim = {"machine": row.machine, "key": row.key, "keep": keep}
        self.conn.execute(self.Q["machine_refusals_trim"], trim)

    def send_outcome(self, machine: str, key: str, idempotency_key: str) -> str | None:
        params = {"machine": machine, "key": key, "idempotency_key": idempotency_key}
        row = self.conn.execute(self.Q["machine_send_get"], params).fetchone()
        return None if row is None else str(row[0])

    def save_send_outcome(
        self, machine: str, key: str, idempotency_key: str, outcome_json: str
    ) -> None:
        params = {
            "machine": machine,
            "key": key,
            "idempotency_key": idempotency_key,
            "outcome": outcome_json,
            "now": self.now,
        }
        self.conn.execute(self.Q["machine_send_save"], params)

    def add_replies(self, replies: Sequence[Reply]) -> None:
        if replies:
            self.conn.cursor().executemany(
                self.Q["machine_replies_add"], [asdict(r) for r in replies]
            )

    def take_replies(self, job_ids: Sequence[int]) -> list[Reply]:
        if not job_ids:
            return []
        params = {"ids": self.store._sql_list(job_ids)}
        rows = self.conn.execute(self.Q["machine_replies_take"], params).fetchall()
        return sorted((Reply(int(r[0]), r[1], r[2], r[3]) for r in rows), key=lambda r: r.job_id)

    def save_retention(self, machine: str, keep_last: int | None, keep_days: float | None) -> None:
        params = {"machine": machine, "keep_last": keep_last, "keep_days": keep_days}
        self.conn.execute(self.Q["machine_retention_save"], params)

    def prune_history(
        self, machine: str, keep_last: int | None, before: float | None, limit: int
    ) -> int:
        params = {"machine": machine, "keep_last": keep_last, "before": before, "limit": limit}
        return int(self.conn.execute(self.Q["machine_history_prune"], params).rowcount)


def _instance_params(row: InstanceRow, now: float) -> dict[str, Any]:
    return {
        "machine": row.machine,
        "key": row.key,
        "version": row.version,
        "state": row.state,
        "context": row.context_json,
        "seq": row.seq,
        "final": row.final,
        "now": now,
    }
