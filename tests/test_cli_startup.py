"""An instant command line: ``--help`` and ``--version`` import no torch.

``benchmarks/bench_cli_startup.py`` measures the time; here the rule that keeps it short.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from chexviz import cli

_COMMANDS = ["demo", "train", "evaluate", "explain", "localize"]


def test_help_and_version_import_no_torch() -> None:
    script = f"""
import sys
from chexviz.cli import main
for argv in [["--help"], ["--version"], *([name, "--help"] for name in {_COMMANDS!r})]:
    try:
        main(argv)
    except SystemExit as stop:
        assert stop.code == 0, argv
heavy = sorted(name for name in ("torch", "torchvision", "pandas", "PIL", "matplotlib")
               if name in sys.modules)
print("heavy modules:", heavy, file=sys.stderr)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert "heavy modules: []" in done.stderr, done.stderr
    assert "usage: chexviz localize" in done.stdout


def test_the_console_script_module_imports_no_torch() -> None:
    # `python -m chexviz.cli` and the `chexviz` entry point import the package first.
    script = "import sys, chexviz, chexviz.cli; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_parser_constants_agree_with_the_library() -> None:
    from chexviz import demo
    from chexviz.explain import METHODS
    from chexviz.models import list_heads

    assert cli._CAM_METHODS == METHODS
    assert tuple(list_heads()) == cli._HEADS
    assert (
        cli._DEMO_BACKBONE,
        cli._DEMO_IMAGES,
        cli._DEMO_EPOCHS,
        cli._DEMO_IMAGE_SIZE,
        cli._DEMO_LR,
    ) == (
        demo.DEFAULT_BACKBONE,
        demo.DEFAULT_IMAGES,
        demo.DEFAULT_EPOCHS,
        demo.DEFAULT_IMAGE_SIZE,
        demo.DEFAULT_LR,
    )


def test_the_lazy_package_still_exports_every_name() -> None:
    import chexviz

    for name in chexviz.__all__:
        assert getattr(chexviz, name) is not None, name
    assert set(chexviz.__all__) <= set(dir(chexviz))
    with pytest.raises(AttributeError, match="no_such_name"):
        chexviz.no_such_name  # noqa: B018
