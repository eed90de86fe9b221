"""The README says what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from instar.diagram import render

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_lifecycle_diagram_is_drawn_from_the_table() -> None:
    block = re.search(r"```mermaid\n(.*?)```", README, re.S)
    assert block is not None
    assert block.group(1).strip() == render("mermaid").strip()


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    block = re.search(r"## A first job\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    app = namespace["app"]
    job = namespace["job"]
    assert app.get(job.id).result == {"path": "a.png", "width": 100}  # type: ignore[attr-defined]
