"""Methods compared on the same X-rays: paired bootstrap, percentage decrease, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chexviz.cli import main
from chexviz.data.chexlocalize import read_chexlocalize
from chexviz.data.dataset import CheXpertDataset
from chexviz.evaluate.compare import compare_localization, compare_methods
from chexviz.models.classifier import MultiLabelClassifier

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

_LABELS = ("Edema", "Atelectasis")


def _scores(n: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {
            "cxr_id": f"patient{c:05d}_study1_view1_frontal",
            "label": label,
            "gt_pixels": 100,
            "iou": rng.random(),
            "hit": float(rng.random() < 0.6),
            "prior_iou": 0.3 * rng.random(),
            "prior_hit": float(rng.random() < 0.3),
        }
        for c in range(n)
        for label in _LABELS
    ]
    return pd.DataFrame(rows)


def _row(table: pd.DataFrame, method: str, pathology: str) -> pd.Series:
    found: pd.Series = table[(table["method"] == method) & (table["pathology"] == pathology)].iloc[
        0
    ]
    return found


def test_identical_methods_differ_by_exactly_zero_in_every_replicate() -> None:
    a = _scores()
    b = _scores(seed=1)
    result = compare_localization({"a": a, "twin": a.copy(), "b": b}, n_bootstrap=200)
    boot = result.bootstrap
    for metric in ("miou", "hit_rate"):
        np.testing.assert_array_equal(boot["a"][metric], boot["twin"][metric])
    # Twin and a differ from the best (or from each other) by the same amounts.
    for pathology in (*_LABELS, "mean"):
        a_row, twin_row = _row(result.table, "a", pathology), _row(result.table, "twin", pathology)
        for column in ("miou_diff_from_best", "miou_diff_from_best_lower", "miou_diff_from_prior"):
            assert a_row[column] == twin_row[column]


def test_a_constant_shift_gives_a_collapsed_difference_interval() -> None:
    a = _scores()
    shifted = a.assign(iou=a["iou"] + 0.05)
    result = compare_localization({"a": a, "shifted": shifted}, n_bootstrap=300)
    for pathology in (*_LABELS, "mean"):
        row = _row(result.table, "a", pathology)
        assert row["miou_best"] == "shifted"
        assert row["miou_diff_from_best"] == pytest.approx(-0.05)
        assert row["miou_diff_from_best_lower"] == pytest.approx(-0.05)
        assert row["miou_diff_from_best_upper"] == pytest.approx(-0.05)
        # Unpaired intervals of the two means would overlap widely.
        assert row["miou_upper"] - row["miou_lower"] > 0.1


def test_diff_from_prior_uses_the_prior_columns_or_a_prior_method() -> None:
    a = _scores()
    result = compare_localization({"a": a}, n_bootstrap=50)
    row = _row(result.table, "a", "Edema")
    edema = a[a["label"] == "Edema"]
    assert row["miou_diff_from_prior"] == pytest.approx(
        edema["iou"].mean() - edema["prior_iou"].mean()
    )
    prior = a.assign(iou=a["iou"] - 0.1, hit=a["hit"])
    with_method = compare_localization({"a": a, "prior": prior}, n_bootstrap=50)
    row = _row(with_method.table, "a", "Edema")
    assert row["miou_diff_from_prior"] == pytest.approx(0.1)
    assert row["miou_diff_from_prior_lower"] == pytest.approx(0.1)
    assert row["miou_best"] == "a"  # the prior is not a contender


def test_percentage_decrease_matches_a_hand_computation() -> None:
    method = _scores(seed=2)
    human = _scores(seed=3).assign(iou=lambda f: f["iou"] * 0.5 + 0.5)
    n_bootstrap = 100
    result = compare_localization(
        {"gradcam": method, "human": human}, n_bootstrap=n_bootstrap, reference="human"
    )
    # By hand: one resample of the CXRs per replicate, shared by both tables.
    cxrs = sorted(set(method["cxr_id"]))
    state = np.random.RandomState(0)
    ratios = []
    for _ in range(n_bootstrap):
        drawn = [cxrs[i] for i in state.choice(len(cxrs), size=len(cxrs), replace=True)]
        pick = pd.DataFrame({"cxr_id": drawn})
        ours = pick.merge(method[method["label"] == "Edema"], on="cxr_id")["iou"].mean()
        theirs = pick.merge(human[human["label"] == "Edema"], on="cxr_id")["iou"].mean()
        ratios.append((theirs - ours) / theirs * 100)
    ordered = np.sort(ratios)
    edema_m = method.loc[method["label"] == "Edema", "iou"].mean()
    edema_h = human.loc[human["label"] == "Edema", "iou"].mean()
    row = _row(result.table, "gradcam", "Edema")
    assert row["miou_pct_decrease"] == pytest.approx((edema_h - edema_m) / edema_h * 100)
    assert row["miou_pct_decrease_lower"] == pytest.approx(ordered[int(0.025 * n_bootstrap) - 1])
    assert row["miou_pct_decrease_upper"] == pytest.approx(ordered[int(0.975 * n_bootstrap) - 1])
    assert _row(result.table, "human", "Edema")["miou_pct_decrease"] == 0.0


def test_too_few_cases_are_left_out_of_the_mean() -> None:
    a = _scores(n=30)
    few = a["label"].eq("Atelectasis") & (a.index % 2 == 1)
    a.loc[few, "gt_pixels"] = 0
    a.loc[a["label"].eq("Atelectasis") & ~few, "gt_pixels"] = 0
    a.loc[a.index[a["label"].eq("Atelectasis")][:5], "gt_pixels"] = 100
    result = compare_localization({"a": a, "b": _scores(seed=4)}, n_bootstrap=50)
    row = _row(result.table, "a", "Atelectasis")
    assert row["status"] == "too few cases"
    assert np.isnan(row["miou"])
    mean = _row(result.table, "a", "mean")
    assert mean["status"] == "mean of 1"
    assert mean["miou"] == pytest.approx(_row(result.table, "a", "Edema")["miou"])


def test_methods_on_different_cxrs_are_refused_by_name() -> None:
    a = _scores()
    fewer = a[a["cxr_id"] != "patient00003_study1_view1_frontal"]
    with pytest.raises(ValueError, match=r"'a' and 'b'.*different CXRs.*patient00003"):
        compare_localization({"a": a, "b": fewer})
    with pytest.raises(ValueError, match="reference 'hb' is not one of the methods"):
        compare_localization({"a": a}, reference="hb")


def test_box_tables_are_compared_per_finding() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "index": range(24),
            "Path": [f"img{i}.png" for i in range(24)],
            "label": ["Edema"] * 24,
            "explained": True,
            "hit": pd.array(rng.random(24) < 0.5, dtype="boolean"),
            "iou": rng.random(24),
            "energy": rng.random(24),
        }
    )
    result = compare_localization({"gradcam": table, "ig": table.copy()}, n_bootstrap=20)
    assert {"miou", "hit_rate", "energy", "energy_diff_from_best_lower"} <= set(result.table)


# -- the whole thing on the synthetic CheXlocalize set --------------------------------------------


def test_localize_methods_writes_the_comparison_and_per_method_tables(
    chexlocalize_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, model = chexlocalize_set
    folder = root / "data" / "CheXpert-v1.0-small"
    truth = folder / "gt_segmentations_val.json"
    out = root / "out"
    arguments = ["localize", "--model", str(model), "--data", str(root / "data")]
    arguments += ["--ground-truth", str(truth), "--out", str(out), "--bootstrap", "30"]
    arguments += ["--methods", "gradcam,eigencam,ig", "--min-positives", "2"]
    arguments += ["--validation-csv", "valid.csv", "--validation-ground-truth", str(truth)]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "best method by mean mIoU:" in printed
    for method in ("gradcam", "eigencam", "ig"):
        assert f"{method}: mIoU " in printed
        for name in ("per_image.csv", "iou_results_per_cxr.csv", "iou_summary_results.csv"):
            assert (out / method / name).is_file(), (method, name)
        assert (out / method / "tuning_results.csv").is_file()
    table = pd.read_csv(out / "comparison.csv")
    assert set(table["method"]) == {"gradcam", "eigencam", "ig"}
    assert {"miou_diff_from_best_lower", "hit_rate_diff_from_prior_upper"} <= set(table)
    assert (out / "comparison.png").stat().st_size > 10_000


def test_localize_methods_refuses_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "localize",
                "--model",
                "m",
                "--data",
                ".",
                "--ground-truth",
                "g",
                "--out",
                "o",
                "--methods",
                "gradcam,nope",
            ]
        )
    assert "unknown method(s) ['nope']; known methods: gradcam" in capsys.readouterr().err


def test_compare_methods_refuses_maps_of_the_wrong_size(
    chexlocalize_set: tuple[Path, Path],
) -> None:
    root, model_path = chexlocalize_set
    model = MultiLabelClassifier.load(model_path)
    folder = root / "data"
    data = CheXpertDataset(folder, "valid.csv", image_size=48, frontal_only=False, progress=False)
    truth = read_chexlocalize(folder / "CheXpert-v1.0-small" / "gt_segmentations_val.json")

    class Stretched:
        def __init__(self, model: torch.nn.Module) -> None:
            self.model = model
            self.inner = __import__("chexviz").GradCAM(model)

        def explain(self, images: torch.Tensor, classes: list[list[str]]):  # type: ignore[no-untyped-def]
            explanation = self.inner.explain(images, classes)
            for maps in explanation.raw_maps:
                for label in list(maps):
                    maps[label] = torch.rand(4, 12)
            return explanation

    with pytest.raises(ValueError, match=r"CXR 'patient.*the Stretched map has shape \[4, 12\]"):
        compare_methods(model, methods=[Stretched], chexlocalize=(data, truth), n_bootstrap=5)


def test_mapping_only_the_findings_scores_as_mapping_everything(
    chexlocalize_set: tuple[Path, Path],
) -> None:
    from chexviz import GradCAM, score_chexlocalize
    from chexviz.evaluate.chexlocalize import chexlocalize_maps

    root, model_path = chexlocalize_set
    model = MultiLabelClassifier.load(model_path)
    folder = root / "data"
    data = CheXpertDataset(folder, "valid.csv", image_size=48, frontal_only=False, progress=False)
    truth = read_chexlocalize(folder / "CheXpert-v1.0-small" / "gt_segmentations_val.json")
    every = chexlocalize_maps(GradCAM(model), data, truth, progress=False)
    few = chexlocalize_maps(GradCAM(model), data, truth, findings_only=True, progress=False)
    assert len(few.heatmaps) < len(every.heatmaps)
    full = score_chexlocalize(every.heatmaps, truth, n_bootstrap=5).per_image
    part = score_chexlocalize(few.heatmaps, truth, n_bootstrap=5).per_image
    kept = full[full["label"].isin(set(part["label"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, part.reset_index(drop=True))


def test_localize_methods_adds_the_human_benchmark(
    chexlocalize_set: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys
    import types

    from chexviz.data.chexlocalize import LOCALIZATION_LABELS

    def score_human_benchmark(ground_truth, hb_segmentations, *, salient_points=None):  # type: ignore[no-untyped-def]
        # A stand-in of chexviz.evaluate.chexlocalize.human: a benchmark that segments every
        # finding at IoU 0.9 and hits it, in the per_image format.
        labels = [
            label
            for label in LOCALIZATION_LABELS
            if any(not ground_truth.is_empty(cxr, label) for cxr in ground_truth)
        ]
        rows = []
        for cxr in sorted(ground_truth):
            for label in labels:
                found = not ground_truth.is_empty(cxr, label)
                pixels = int(ground_truth.mask(cxr, label).sum()) if found else 0
                rows.append(
                    {
                        "cxr_id": cxr,
                        "label": label,
                        "gt_pixels": pixels,
                        "pred_pixels": pixels,
                        "iou": 0.9 if found else np.nan,
                        "hit": 1.0 if found else np.nan,
                    }
                )
        return pd.DataFrame(rows)

    stub = types.ModuleType("chexviz.evaluate.chexlocalize.human")
    stub.score_human_benchmark = score_human_benchmark  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chexviz.evaluate.chexlocalize.human", stub)
    root, model = chexlocalize_set
    truth = root / "data" / "CheXpert-v1.0-small" / "gt_segmentations_val.json"
    out = root / "with-human"
    arguments = ["localize", "--model", str(model), "--data", str(root / "data")]
    arguments += ["--ground-truth", str(truth), "--out", str(out), "--bootstrap", "20"]
    arguments += ["--methods", "gradcam", "--min-positives", "2"]
    arguments += ["--human-benchmark", str(truth)]
    assert main(arguments) == 0
    assert "human benchmark: mIoU 0.900" in capsys.readouterr().out
    table = pd.read_csv(out / "comparison.csv")
    human = table[(table["method"] == "human benchmark") & (table["pathology"] == "mean")]
    assert human["miou"].iloc[0] == pytest.approx(0.9)
    gradcam = table[(table["method"] == "gradcam") & (table["pathology"] == "mean")].iloc[0]
    assert gradcam["miou_pct_decrease"] == pytest.approx((0.9 - gradcam["miou"]) / 0.9 * 100)
    assert (out / "human_benchmark" / "per_image.csv").is_file()
