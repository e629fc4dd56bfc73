import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from chexviz.training.history import EpochRecord, History
from chexviz.training.metrics import compute_metrics


def _history() -> History:
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.8]])
    targets = np.array([[1, 0], [0, 0], [1, math.nan]])
    good = compute_metrics(probs, targets, 0.5, ["A", "B"], loss=0.4)
    worse = compute_metrics(1 - probs, targets, 0.5, ["A", "B"], loss=0.6)
    return History(
        [
            EpochRecord(1, 0.7, 2.0, 16.0, 2e-4, worse),
            EpochRecord(2, 0.5, 2.5, 12.8, 1e-4, good),
            EpochRecord(3, 0.45, 2.0, 16.0, 5e-5, worse),
        ]
    )


def test_best_epoch_and_properties():
    history = _history()
    assert len(history) == 3
    assert history.best_epoch == 2
    assert history[1].val_auroc == 1.0
    assert history[1].val_loss == 0.4
    assert History([EpochRecord(1, 0.7, 1.0, 1.0, 1e-3)]).best_epoch is None
    assert math.isnan(EpochRecord(1, 0.7, 1.0, 1.0, 1e-3).val_loss)


def test_frame_and_csv(tmp_path):
    history = _history()
    frame = history.to_frame()
    assert list(frame.index) == [1, 2, 3]
    assert frame.loc[2, "val_auroc"] == 1.0
    assert frame.loc[3, "train_loss"] == 0.45
    assert frame.loc[2, "images_per_second"] == 12.8
    history.to_csv(tmp_path / "h.csv")
    read = pd.read_csv(tmp_path / "h.csv", index_col="epoch")
    pd.testing.assert_frame_equal(read, frame, check_dtype=False)
    assert list(History().to_frame().columns)[:2] == ["train_loss", "val_loss"]


def test_json_round_trip_is_strict(tmp_path):
    history = _history()
    history.to_json(tmp_path / "h.json")
    json.loads((tmp_path / "h.json").read_text(), parse_constant=pytest.fail)
    back = History.from_json(tmp_path / "h.json")
    assert back.to_dict() == history.to_dict()
    assert History.from_dict(history.to_dict()).best_epoch == 2


def test_plot_writes_png(tmp_path):
    _history().plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty"):
        History().plot(tmp_path / "none.png")


def test_import_does_not_load_matplotlib():
    code = "import sys, chexviz.training.history; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
