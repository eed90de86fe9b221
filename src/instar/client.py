"""A Python client of the HTTP API, for processes that do not reach the database.

``Client(url, token=...)`` has the App's method names (enqueue by name, get,
jobs, history, cancel, pause, resume, retry, stop, resolve, reject, wait,
events) and speaks only HTTP; ``AsyncClient`` is the same for asyncio. They
return the API's JSON shapes (``instar.schemas``: ``JobShape``, ``EventShape``,
``AwakeableShape``, ``QueueShape``). A problem the server answers is raised as
the Instar error of its ``code`` (``InvalidTransition``, ``JobNotFound``,
``VersionMismatch`` ...) carrying the problem's members as attributes, or as
``ApiError`` for the API's own codes (``unauthorized``, ``insufficient_scope``,
``validation_failed`` ...). Needs httpx (``pip install instar[client]``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from instar.errors import InstarError
from instar.lifecycle import State, is_terminal
from instar.schemas import AwakeableShape, EventShape, JobShape, QueueShape

T = TypeVar("T")
PREFIX = "/api/v1"

log = logging.getLogger("instar.client")


class ApiError(InstarError):
    """A problem the API answered that no Instar error names: ``status``,
    ``code`` and the whole ``problem`` document."""

    def __init__(self, status: int, code: str, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code  # type: ignore[misc]
        self.problem = problem


def _error_classes() -> dict[str, type[InstarError]]:
    found: dict[str, type[InstarError]] = {}
    pending: list[type[InstarError]] = [InstarError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    found.pop("error", None)
    return found


def raise_problem(response: httpx.Response) -> None:
    """Raise what a response that is not a success says."""
    if response.is_success:
        return
    try:
        problem = response.json()
        code, detail = str(problem["code"]), str(problem["detail"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "error", response.text[:500], {}) from None
    cls = _error_classes().get(code)
    if cls is None or cls is ApiError:
        raise ApiError(response.status_code, code, detail, problem)
    error = cls.__new__(cls)
    Exception.__init__(error, detail)
    for member, value in problem.items():
        if member not in ("type", "title", "status", "detail", "code"):
            setattr(error, {"from": "from_state", "to": "to_state"}.get(member, member), value)
    raise error


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request and how its answer is read."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Any = None
    body: Any = None
    headers: Mapping[str, str] | None = None


def _job(response: httpx.Response) -> JobShape:
    return JobShape.model_validate(response.json())


def _jobs(response: httpx.Response) -> list[JobShape]:
    return [JobShape.model_validate(j) for j in response.json()["jobs"]]


def _awakeable(response: httpx.Response) -> AwakeableShape:
    return AwakeableShape.model_validate(response.json())


def _events(response: httpx.Response) -> list[EventShape]:
    return [EventShape.model_validate(e) for e in response.json()["events"]]


def _placement(
    name: str, args: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "args": dict(args or {})}
    for option, value in options.items():
        if value is None:
            continue
        if option == "run_at" and isinstance(value, datetime):
            body[option] = value.isoformat()
        elif option == "after":
            body[option] = [getattr(v, "id", v) for v in value]
        else:
            body[option] = value
    return body


class _Calls:
    """The requests behind each method, shared by Client and AsyncClient."""

    @staticmethod
    def enqueue(
        name: str, args: Mapping[str, Any] | None, options: Mapping[str, Any]
    ) -> _Call[JobShape]:
        return _Call("POST", "/jobs", _job, body=_placement(name, args, options))

    @staticmethod
    def get(job_id: int) -> _Call[JobShape]:
        return _Call("GET", f"/jobs/{job_id}", _job)

    @staticmethod
    def jobs(
        state: State | str | None, queue: str | None, name: str | None, limit: int
    ) -> _Call[list[JobShape]]:
        params = {"state": state, "queue": queue, "name": name, "limit": limit}
        return _Call("GET", "/jobs", _jobs, params={k: v for k, v in params.items() if v})

    @staticmethod
    def history(job_id: int) -> _Call[list[EventShape]]:
        return _Call("GET", f"/jobs/{job_id}/events", _events, params={"limit": 500})

    @staticmethod
    def verb(verb: str, job_id: int, if_version: int | None, reason: str | None) -> _Call[JobShape]:
        headers = None if if_version is None else {"If-Match": f'"{if_version}"'}
        body = None if reason is None else {"reason": reason}
        return _Call("POST", f"/jobs/{job_id}/{verb}", _job, body=body, headers=headers)

    @staticmethod
    def resolve(awakeable_id: str, value: Any) -> _Call[AwakeableShape]:
        return _Call(
            "POST", f"/awakeables/{awakeable_id}/resolve", _awakeable, body={"value": value}
        )

    @staticmethod
    def reject(awakeable_id: str, reason: str) -> _Call[AwakeableShape]:
        return _Call(
            "POST", f"/awakeables/{awakeable_id}/reject", _awakeable, body={"reason": reason}
        )

    @staticmethod
    def awakeables(job_id: int) -> _Call[list[AwakeableShape]]:
        return _Call(
            "GET",
            f"/jobs/{job_id}/awakeables",
            lambda r: [AwakeableShape.model_validate(a) for a in r.json()],
        )

    @staticmethod
    def queues() -> _Call[list[QueueShape]]:
        return _Call("GET", "/queues", lambda r: [QueueShape.model_validate(q) for q in r.json()])

    @staticmethod
    def events_page(after: int, where: Mapping[str, Any]) -> _Call[list[EventShape]]:
        return _Call("GET", "/events", _events, params={"after": after, "limit": 1000, **where})


def _where(
    job: int | None, queue: str | None, state: State | str | None, name: str | None
) -> dict[str, Any]:
    found = {"job": job, "queue": queue, "state": state, "name": name}
    return {k: str(v) for k, v in found.items() if v is not None}


class _Frames:
    """Server-Sent Events lines in, timeline events out (comments and other
    frames are skipped)."""

    def __init__(self) -> None:
        self.data: str | None = None

    def feed(self, line: str) -> EventShape | None:
        if line.startswith("data: "):
            self.data = line[6:]
        elif line == "" and self.data is not None:
            payload = json.loads(self.data)
            self.data = None
            if "id" in payload:
                return EventShape.model_validate(payload)
            if "pruned_through" in payload:
                log.warning(
                    "events after %s up to %s were pruned by retention: some are missing",
                    payload.get("after"),
                    payload["pruned_through"],
                )
        return None


class Client:
    """The HTTP API from Python, synchronously. ``timeout``: seconds for one
    request (a followed event stream waits as long as it is told)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(
            base_url=url.rstrip("/") + PREFIX, headers=headers, timeout=timeout
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: _Call[T]) -> T:
        response = self._http.request(
            call.method, call.path, params=call.params, json=call.body, headers=call.headers
        )
        raise_problem(response)
        return call.parse(response)

    def enqueue(self, name: str, args: Mapping[str, Any] | None = None, **options: Any) -> JobShape:
        """Options: delay, run_at, priority, queue, key, after (as ``App.enqueue``)."""
        return self._do(_Calls.enqueue(name, args, options))

    def get(self, job_id: int) -> JobShape:
        return self._do(_Calls.get(job_id))

    def jobs(
        self,
        state: State | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[JobShape]:
        return self._do(_Calls.jobs(state, queue, name, limit))

    def history(self, job_id: int) -> list[EventShape]:
        return self._do(_Calls.history(job_id))

    def cancel(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return self._do(_Calls.verb("cancel", job_id, if_version, reason))

    def pause(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return self._do(_Calls.verb("pause", job_id, if_version, reason))

    def resume(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return self._do(_Calls.verb("resume", job_id, if_version, reason))

    def retry(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return self._do(_Calls.verb("retry", job_id, if_version, reason))

    def stop(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return self._do(_Calls.verb("stop", job_id, if_version, reason))

    def resolve(self, awakeable_id: str, value: Any = None) -> AwakeableShape:
        return self._do(_Calls.resolve(awakeable_id, value))

    def reject(self, awakeable_id: str, reason: str) -> AwakeableShape:
        return self._do(_Calls.reject(awakeable_id, reason))

    def awakeables(self, job_id: int) -> list[AwakeableShape]:
        return self._do(_Calls.awakeables(job_id))

    def queues(self) -> list[QueueShape]:
        return self._do(_Calls.queues())

    def events(
        self,
        after: int | None = None,
        follow: bool = False,
        job: int | None = None,
        queue: str | None = None,
        state: State | str | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[EventShape]:
        """Events after the event ``after`` (None: from the first), in commit
        order. With ``follow`` it reads the live stream, for ``timeout`` seconds
        at most if given, and resumes after a dropped connection from the last
        event it gave."""
        where = _where(job, queue, state, name)
        if not follow:
            last = after or 0
            while True:
                page = self._do(_Calls.events_page(last, where))
                yield from page
                if len(page) < 1000:
                    return
                last = page[-1].id
        deadline = None if timeout is None else time.monotonic() + timeout
        last_seen = after or 0
        while deadline is None or time.monotonic() < deadline:
            params = {**where, "after": str(last_seen)}
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            try:
                with self._http.stream(
                    "GET", "/events/stream", params=params, timeout=httpx.Timeout(30.0, read=left)
                ) as response:
                    if not response.is_success:
                        response.read()
                        raise_problem(response)
                    frames = _Frames()
                    for line in response.iter_lines():
                        if deadline is not None and time.monotonic() >= deadline:
                            return
                        event = frames.feed(line)
                        if event is not None:
                            last_seen = event.id
                            yield event
            except httpx.ReadTimeout:
                return
            except httpx.TransportError:
                time.sleep(0.5)  # the server went away: resume from the last event

    def wait(self, job_id: int, timeout: float | None = None) -> JobShape:
        """The job once it has ended (completed, failed or cancelled), following
        its events; ``TimeoutError`` after ``timeout`` seconds."""
        start = self.history(job_id)
        job = self.get(job_id)
        if is_terminal(job.state):
            return job
        after = start[-1].id if start else 0
        for event in self.events(after, follow=True, job=job_id, timeout=timeout):
            if is_terminal(event.to_state):
                return self.get(job_id)
        job = self.get(job_id)
        if is_terminal(job.state):
            return job
        raise TimeoutError(f"job {job_id} did not end within {timeout} s (it is {job.state})")


class AsyncClient:
    """``Client`` for asyncio: the same methods, awaited."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/") + PREFIX, headers=headers, timeout=timeout
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _do(self, call: _Call[T]) -> T:
        response = await self._http.request(
            call.method, call.path, params=call.params, json=call.body, headers=call.headers
        )
        raise_problem(response)
        return call.parse(response)

    async def enqueue(
        self, name: str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> JobShape:
        return await self._do(_Calls.enqueue(name, args, options))

    async def get(self, job_id: int) -> JobShape:
        return await self._do(_Calls.get(job_id))

    async def jobs(
        self,
        state: State | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[JobShape]:
        return await self._do(_Calls.jobs(state, queue, name, limit))

    async def history(self, job_id: int) -> list[EventShape]:
        return await self._do(_Calls.history(job_id))

    async def cancel(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return await self._do(_Calls.verb("cancel", job_id, if_version, reason))

    async def pause(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return await self._do(_Calls.verb("pause", job_id, if_version, reason))

    async def resume(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return await self._do(_Calls.verb("resume", job_id, if_version, reason))

    async def retry(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return await self._do(_Calls.verb("retry", job_id, if_version, reason))

    async def stop(
        self, job_id: int, *, if_version: int | None = None, reason: str | None = None
    ) -> JobShape:
        return await self._do(_Calls.verb("stop", job_id, if_version, reason))

    async def resolve(self, awakeable_id: str, value: Any = None) -> AwakeableShape:
        return await self._do(_Calls.resolve(awakeable_id, value))

    async def reject(self, awakeable_id: str, reason: str) -> AwakeableShape:
        return await self._do(_Calls.reject(awakeable_id, reason))

    async def awakeables(self, job_id: int) -> list[AwakeableShape]:
        return await self._do(_Calls.awakeables(job_id))

    async def queues(self) -> list[QueueShape]:
        return await self._do(_Calls.queues())

    async def events(
        self,
        after: int | None = None,
        follow: bool = False,
        job: int | None = None,
        queue: str | None = None,
        state: State | str | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[EventShape]:
        """``Client.events``, as an async iterator."""
        where = _where(job, queue, state, name)
        if not follow:
            last = after or 0
            while True:
                page = await self._do(_Calls.events_page(last, where))
                for event in page:
                    yield event
                if len(page) < 1000:
                    return
                last = page[-1].id
        deadline = None if timeout is None else time.monotonic() + timeout
        last_seen = after or 0
        while deadline is None or time.monotonic() < deadline:
            params = {**where, "after": str(last_seen)}
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            try:
                async with self._http.stream(
                    "GET", "/events/stream", params=params, timeout=httpx.Timeout(30.0, read=left)
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        raise_problem(response)
                    frames = _Frames()
                    async for line in response.aiter_lines():
                        if deadline is not None and time.monotonic() >= deadline:
                            return
                        framed = frames.feed(line)
                        if framed is not None:
                            last_seen = framed.id
                            yield framed
            except httpx.ReadTimeout:
                return
            except httpx.TransportError:
                await asyncio.sleep(0.5)

    async def wait(self, job_id: int, timeout: float | None = None) -> JobShape:
        """``Client.wait``, awaited."""
        start = await self.history(job_id)
        job = await self.get(job_id)
        if is_terminal(job.state):
            return job
        after = start[-1].id if start else 0
        async for event in self.events(after, follow=True, job=job_id, timeout=timeout):
            if is_terminal(event.to_state):
                return await self.get(job_id)
        job = await self.get(job_id)
        if is_terminal(job.state):
            return job
        raise TimeoutError(f"job {job_id} did not end within {timeout} s (it is {job.state})")
