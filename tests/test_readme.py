"""The README's Python snippets run as printed, from a folder outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _snippets() -> list[str]:
    return _PYTHON_BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_a_library_snippet() -> None:
    snippets = _snippets()
    assert snippets, "README.md has no ```python block"
    library = [s for s in snippets if "GradCAM" in s]
    assert library, "README.md shows no GradCAM snippet"
    # explain() without classes= already explains every predicted positive: once is enough.
    for snippet in library:
        assert snippet.count(".explain(") == 1, snippet


@pytest.mark.parametrize("snippet", _snippets(), ids=lambda s: s.splitlines()[0][:40])
def test_readme_snippet_runs_from_any_folder(tmp_path: Path, snippet: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    scratch = tmp_path / "tmp"
    elsewhere.mkdir()
    scratch.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(scratch),  # where tempfile puts the snippet's folder
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pictures = sorted(scratch.rglob("*.png"))
    if "overlay(" in snippet:
        assert pictures, done.stdout
    for picture in pictures:
        with Image.open(picture) as image:
            # Overlays come at the synthetic X-ray's size (about 390x320), not the model's 64 px.
            assert image.width > image.height > 64, (picture.name, image.size)
