import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_report import SIZE, _explanation

from chexviz.explain.figures import save_study_figure, study_figure


def test_study_figure_table_bolds_the_positives() -> None:
    figure = study_figure(_explanation())
    table = next(a for a in figure.axes if a.tables).tables[0]
    weights = {}
    for (row, column), cell in table.get_celld().items():
        if row > 0 and column == 0:
            weights[cell.get_text().get_text()] = cell.get_text().get_fontweight()
    # probabilities 0.1, 0.37, 0.63, 0.9 against thresholds 0.5
    assert weights == {
        "Cardiomegaly": "normal",
        "Edema": "normal",
        "Pleural Effusion": "bold",
        "Support Devices": "bold",
    }
    values = {cell.get_text().get_text() for (r, c), cell in table.get_celld().items() if c == 1}
    assert {"10.0", "36.7", "63.3", "90.0"} <= values


def test_study_figure_has_one_overlay_per_explained_class() -> None:
    figure = study_figure(_explanation(explained=("Edema", "Pleural Effusion", "Cardiomegaly")))
    titles = [a.get_title() for a in figure.axes]
    assert titles[0] == "Input"
    assert titles[2:5] == ["Edema (36.7%)", "Pleural Effusion (63.3%)", "Cardiomegaly (10.0%)"]
    overlay = figure.axes[2].images[0].get_array()
    assert overlay.shape == (SIZE, SIZE, 3)  # the RGB overlay itself, not a colour-mapped array


def test_study_figure_without_explained_classes_says_so() -> None:
    figure = study_figure(_explanation(explained=()))
    assert figure.get_supxlabel() == "no class explained for this image"


def test_save_study_figure_writes_a_png(tmp_path: Path) -> None:
    path = save_study_figure(_explanation(batch=2), tmp_path / "out" / "study.png", index=1)
    assert path == tmp_path / "out" / "study.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width == 1000
    assert os.listdir(tmp_path / "out") == ["study.png"]


def test_save_study_figure_takes_the_format_from_the_suffix(tmp_path: Path) -> None:
    path = save_study_figure(_explanation(), tmp_path / "study.svg")
    assert path.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match=r"'study\.txt'.*\.png"):
        save_study_figure(_explanation(), tmp_path / "study.txt")


def test_save_study_figure_bad_index(tmp_path: Path) -> None:
    with pytest.raises(IndexError, match="index 3"):
        save_study_figure(_explanation(batch=2), tmp_path / "a.png", index=3)


def test_figures_do_not_touch_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys, torch; sys.path[:0] = [{tests!r}]; from test_report import _explanation;"
        "from chexviz.explain.figures import save_study_figure;"
        "save_study_figure(_explanation(), {path!r});"
        "assert 'matplotlib.pyplot' not in sys.modules"
    ).format(tests=str(Path(__file__).parent), path=str(tmp_path / "a.png"))
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("label", [r"$\frac{1}$", "$x^2$", "50% of $", "under_score"])
def test_study_figure_draws_label_names_literally(tmp_path: Path, label: str) -> None:
    explanation = _explanation(labels=(label, "Edema", "P", "Q"), explained=(label, "Edema"))
    explanation = dataclasses.replace(explanation, layer="$bad{layer")
    save_study_figure(explanation, tmp_path / "a.png")  # mathtext would fail or alter it
    figure = study_figure(explanation)
    texts = [*figure.texts, *(axis.title for axis in figure.axes)]
    texts += [
        cell.get_text()
        for axis in figure.axes
        for table in axis.tables
        for cell in table.get_celld().values()
    ]
    shown = {text.get_text() for text in texts if not text.get_parse_math()}
    assert label in shown  # the probability table
    assert f"{label} (10.0%)" in shown  # the overlay title
    assert "gradcam at layer $bad{layer" in shown
