"""The README says what the code does."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from instar.diagram import render
from instar.vocabulary import Actor, AwakeableState, DependencyKind, Trigger

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()


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


@pytest.mark.parametrize("names", [Trigger, Actor, AwakeableState, DependencyKind])
def test_the_readme_lists_every_name_of_the_timelines_vocabulary(names: type[Trigger]) -> None:
    for member in names:
        assert f"| `{member.value}` | {member.meaning} |" in README, member


def test_the_readme_draws_the_layers_import_linter_checks() -> None:
    contract = tomllib.loads(PYPROJECT)["tool"]["importlinter"]["contracts"][0]
    assert contract["type"] == "layers"
    drawn = re.search(r"## Architecture\n.*?```\n(.*?)```", README, re.S)
    assert drawn is not None
    firsts = [line.split()[0] for line in drawn.group(1).splitlines() if line[:1].strip()]
    layers = [layer.split()[0].removeprefix("instar.") for layer in contract["layers"]]
    assert firsts[: len(layers) - 1] == layers[:-1]
