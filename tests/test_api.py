"""The public API: ``chexviz.__all__`` is sorted, importable, documented, and light to import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import chexviz

DOCS = Path(__file__).resolve().parents[1] / "docs"
_ROW = re.compile(
    r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|\s*`chexviz\.([a-z_]+(?:\.[a-z_]+)+)`\s*\|"
)


def _documented_names() -> dict[str, str]:
    rows = (_ROW.match(line) for line in (DOCS / "api" / "chexviz.md").read_text().splitlines())
    return {m.group(1): m.group(2) for m in rows if m}


def test_all_is_sorted_and_unique() -> None:
    assert list(chexviz.__all__) == sorted(set(chexviz.__all__))


def test_all_matches_documented_api() -> None:
    documented = _documented_names()
    assert set(documented) == set(chexviz.__all__) - {"__version__"}
    for name, module in documented.items():
        assert getattr(chexviz, name) is getattr(
            __import__(f"chexviz.{module}", fromlist=[name]), name
        ), f"{name} is not re-exported from chexviz.{module}"
        page = DOCS / "api" / (module.replace(".", "/") + ".md")
        assert page.is_file(), f"no API page for chexviz.{module}"


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, chexviz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
