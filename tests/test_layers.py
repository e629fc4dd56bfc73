"""The layering of the package: imports point down only, and private names stay at home.

Layers, bottom to top (``docs/design.md`` draws them)::

    chexviz._internal, chexviz._version      private helpers, no other chexviz import
    chexviz.data                             labels, images, datasets, ground truth
    chexviz.models                           registry, backbones, heads, classifier, weight file
    chexviz.training | chexviz.explain       siblings: neither imports the other
    chexviz.evaluate                         scoring against an answer key (maps, models)
    chexviz.demo                             the demo pipeline
    chexviz.cli                              the command line (which also runs the demo)

Every import counts, also those inside functions or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

RANK = {
    "_internal": 0,
    "_version": 0,
    "data": 1,
    "models": 2,
    "training": 3,
    "explain": 3,
    "evaluate": 4,
    "demo": 5,
    "cli": 6,
}

# Narrower rules the review asked for, on top of the ranks: (importer, imported, why).
FORBIDDEN = [
    ("chexviz.evaluate.localization", "chexviz.data.synthetic", "boxes live in chexviz.data.boxes"),
    ("chexviz.training.trainer", "chexviz.models.serialization", "go through checkpoint"),
]


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every chexviz import in ``tree``."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("chexviz")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("chexviz"):
                continue
            names = [a.name for a in node.names]
            # `from chexviz.data import _drawing` imports a module, not a name
            submodules = [
                n
                for n in names
                if (SRC / (base + "." + n).replace(".", "/")).exists()
                or (SRC / ((base + "." + n).replace(".", "/") + ".py")).exists()
            ]
            found += [(node.lineno, f"{base}.{n}", []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest:
                found.append((node.lineno, base, rest))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(source: str, module: str) -> list[str]:
    """Every import of ``module`` (given its source) that breaks the layering."""
    own = _layer(module)
    problems = []
    for line, imported, names in _imports(ast.parse(source), module):
        where = f"{module}, line {line}: imports {imported}"
        target = _layer(imported)
        if (
            own is not None
            and target is not None
            and (RANK[target] > RANK[own] or (RANK[target] == RANK[own] and target != own))
        ):
            problems.append(f"{where} (layer {target!r} is not below {own!r})")
        for importer, forbidden, why in FORBIDDEN:
            if module == importer and imported.startswith(forbidden):
                problems.append(f"{where} ({why})")
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        if private and not imported.startswith("chexviz._internal"):
            problems.append(f"{where} private names {private}")
        last = imported.rsplit(".", 1)[-1]
        if last.startswith("_") and last not in ("_internal", "_version"):
            home = imported.rsplit(".", 1)[0]
            if not (module == home or module.startswith(home + ".")) or home == "chexviz":
                problems.append(f"{where} (a private module of another package)")
    return problems


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted((SRC / "chexviz").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_point_down(module: str, path: Path) -> None:
    assert violations(path.read_text(), module) == []


@pytest.mark.parametrize(
    ("module", "source", "message"),
    [
        ("chexviz.data.labels", "from chexviz.models import MultiLabelClassifier", "not below"),
        ("chexviz.models.heads", "import chexviz.training.losses", "not below"),
        ("chexviz.training.trainer", "from chexviz.explain import GradCAM", "not below"),
        ("chexviz.explain.gradcam", "from chexviz.training.metrics import Metrics", "not below"),
        ("chexviz._internal.modules", "from chexviz.data.images import load_image", "not below"),
        ("chexviz.models.classifier", "from chexviz.demo import run_demo", "not below"),
        ("chexviz.demo", "from chexviz.cli import main", "not below"),
        ("chexviz.explain.report", "from chexviz.evaluate.localization import X", "not below"),
        ("chexviz.training.trainer", "from chexviz.evaluate import external", "not below"),
        ("chexviz.evaluate.external", "from chexviz.demo import run_demo", "not below"),
        ("chexviz.evaluate.localization", "from chexviz.data.synthetic import X", "boxes live"),
        ("chexviz.training.trainer", "from chexviz.models.serialization import X", "checkpoint"),
        ("chexviz.explain.report", "from chexviz.explain.overlay import _colormap", "private"),
        ("chexviz.explain.gradcam", "from chexviz.data import _drawing", "private module"),
        ("chexviz.explain.report", "from ..training import metrics", "not below"),
    ],
)
def test_the_check_catches_upward_and_private_imports(
    module: str, source: str, message: str
) -> None:
    found = violations(source, module)
    assert found
    assert message in found[0]


def test_downward_and_same_package_private_imports_pass() -> None:
    assert violations("from chexviz.data.images import load_image", "chexviz.models.heads") == []
    assert violations("from chexviz.explain._cam import fuse", "chexviz.explain.gradcam") == []
    assert violations("from chexviz.data import _drawing", "chexviz.data.synthetic") == []
    assert violations("from chexviz._internal.modules import eval_mode", "chexviz.cli") == []
