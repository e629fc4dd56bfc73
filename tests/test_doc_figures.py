"""The demo figures quoted in the README and the guides are those of the recorded run."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from chexviz import demo

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "demo_figures", ROOT / "docs" / "scripts" / "demo_figures.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _script()


@pytest.fixture(scope="module")
def recorded(script: ModuleType) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(script.RECORDED.read_text())
    return loaded


def test_the_docs_match_the_recorded_run(script: ModuleType, recorded: dict[str, object]) -> None:
    assert script.stale(recorded) == [], (
        "regenerate them: python docs/scripts/demo_figures.py (after --record demo-out --run "
        "if the demo's figures or printout changed)"
    )


def test_every_doc_quoting_the_demo_has_its_regions(script: ModuleType) -> None:
    used = set()
    for name in script.DOCS:
        used |= set(re.findall(r"<!-- figures:([a-z0-9-]+) -->", (ROOT / name).read_text()))
    assert used == set(script.RENDERERS)


def test_the_recorded_run_has_the_tools_stages_and_environment(
    recorded: dict[str, object],
) -> None:
    summary = recorded["summary"]
    assert isinstance(summary, dict)
    assert len(summary["stages"]) == demo._STAGES
    assert {"torch", "python", "machine", "cpus", "date"} <= set(summary["environment"])


def test_no_hand_typed_stage_count_or_demo_figure_is_left(script: ModuleType) -> None:
    region = re.compile(r"<!-- figures:[a-z0-9-]+ -->.*?<!-- /figures -->", re.DOTALL)
    for name in script.DOCS:
        outside = region.sub("", (ROOT / name).read_text())
        assert not re.search(r"\b(six|seven|eight) stages\b", outside), name
        # the demo's headline figures were quoted to three decimals
        assert re.findall(r".*\b0\.\d{3}\b.*", outside) == [], name


def test_a_region_is_rewritten_from_the_recorded_run(
    script: ModuleType, recorded: dict[str, object]
) -> None:
    text = "before\n<!-- figures:demo-outputs -->\nstale 4.8 MB\n<!-- /figures -->\nafter\n"
    rewritten = script.rewrite(text, recorded)
    assert "stale" not in rewritten
    assert rewritten.startswith("before\n<!-- figures:demo-outputs -->\nOutputs land in")
    assert rewritten.endswith("<!-- /figures -->\nafter\n")
    with pytest.raises(ValueError, match="unknown figures region 'nope'"):
        script.rewrite("<!-- figures:nope -->\n<!-- /figures -->", recorded, "X.md")
