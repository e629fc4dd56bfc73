"""``chexviz localize``: heatmaps scored against CheXlocalize's or NIH's annotations."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from chexviz.cli._common import load_model

if TYPE_CHECKING:
    import pandas as pd

    from chexviz.models.classifier import MultiLabelClassifier


def run_localize(args: argparse.Namespace) -> None:
    """Runs ``chexviz localize``: CheXlocalize, several ``--methods``, or ``--nih-boxes``."""
    if args.nih_boxes is not None:
        _run_localize_nih(args)
        return
    if args.methods is not None:
        _run_localize_methods(args)
        return
    for option in ("validation_csv", "validation_ground_truth", "human_benchmark"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option.replace('_', '-')} goes with --methods")
    from chexviz.data.chexlocalize import read_chexlocalize
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.evaluate.chexlocalize import read_tuning_csv, run_chexlocalize
    from chexviz.explain.gradcam import GradCAM

    ground_truth = read_chexlocalize(args.ground_truth)
    thresholds = read_tuning_csv(args.thresholds) if args.thresholds else None
    cutoffs = read_tuning_csv(args.cutoffs) if args.cutoffs else None
    model = load_model(args.model)
    _refuse_cropped(model, args.model)
    data = CheXpertDataset(
        args.data,
        args.csv,
        image_size=model.image_size,
        in_channels=model.in_channels,
        labels=model.labels,
        frontal_only=False,
        progress=args.progress,
    )
    scores = run_chexlocalize(
        GradCAM(model, method=args.method),
        data,
        ground_truth,
        args.out,
        thresholds=thresholds,
        cutoffs=cutoffs,
        true_positive_only=not args.full_set,
        overlays=args.overlays,
        tune=args.tune,
        export=args.save_segmentations,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        progress=args.progress,
        min_cases=args.min_positives,
    )
    summary = scores.summary
    columns = ["status", "positives", "patients"]
    columns += ["miou", "miou_lower", "miou_upper", "miou_n", "prior_miou", "chance_miou"]
    columns += ["hit_rate", "hit_rate_lower", "hit_rate_upper", "prior_hit_rate", "chance_hit_rate"]
    print(summary[columns].to_string(float_format="%.3f"))
    labels = summary.drop(index="mean")
    _print_too_few(
        labels,
        [
            f"{row.positives} X-rays with a finding of {row.patients} patients, "
            f"{row.miou_n} with a defined IoU"
            for row in labels.itertuples()
        ],
        args.min_positives,
    )
    print(f"tables and figures: {args.out}")


def _refuse_cropped(model: MultiLabelClassifier, spec: str | Path) -> None:
    """Refuses to score a centre-cropping model against whole-image annotations.

    Its heatmaps cover each X-ray's centred square, while the boxes and segmentations are
    drawn on the whole image; scoring one against the other would need the annotations
    shifted and cut to the square, which chexviz does not do.
    """
    if model.input_crop != "whole":
        raise ValueError(
            f"localize cannot score model {str(spec)!r}: it sees each X-ray's centred square "
            f"(input_crop={model.input_crop!r}, as torchxrayvision's models do), but the boxes "
            "are drawn on the whole image; chexviz does not shift annotations to the crop. "
            "Use `chexviz explain` for its heatmaps"
        )


def _run_localize_methods(args: argparse.Namespace) -> None:
    """Several methods by the CheXlocalize protocol on the same X-rays, side by side."""
    from chexviz.data.chexlocalize import read_chexlocalize
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.evaluate.compare import compare_methods

    if args.thresholds or args.cutoffs or args.full_set or args.tune or args.save_segmentations:
        raise ValueError(
            "--methods tunes each method's thresholds on --validation-csv; it does not take "
            "--thresholds, --cutoffs, --full-set, --tune or --save-segmentations"
        )
    if (args.validation_csv is None) != (args.validation_ground_truth is None):
        raise ValueError("--validation-csv and --validation-ground-truth go together")
    ground_truth = read_chexlocalize(args.ground_truth)
    model = load_model(args.model)
    _refuse_cropped(model, args.model)

    def dataset(csv: str) -> CheXpertDataset:
        return CheXpertDataset(
            args.data,
            csv,
            image_size=model.image_size,
            in_channels=model.in_channels,
            labels=model.labels,
            frontal_only=False,
            progress=args.progress,
        )

    validation = None
    if args.validation_csv is not None:
        validation = (
            dataset(args.validation_csv),
            read_chexlocalize(args.validation_ground_truth),
        )
    human = None
    if args.human_benchmark is not None:
        try:
            # Imported by name: the human-benchmark reader is a separate module of its own.
            human_module = importlib.import_module("chexviz.evaluate.chexlocalize.human")
            score_human_benchmark = human_module.score_human_benchmark
        except (ImportError, AttributeError):
            raise ValueError(
                "--human-benchmark needs chexviz.evaluate.chexlocalize.human (the "
                "human-benchmark reader), which this installation of chexviz lacks"
            ) from None
        human = score_human_benchmark(ground_truth, args.human_benchmark)
    results = compare_methods(
        model,
        methods=args.methods,
        chexlocalize=(dataset(args.csv), ground_truth),
        validation=validation,
        human_benchmark=human,
        out_dir=args.out,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        progress=args.progress,
        min_cases=args.min_positives,
        on_method=lambda name: print(f"scoring {name}", file=sys.stderr),
    )
    comparison = results.chexlocalize
    assert comparison is not None
    columns = ["method", "pathology", "status", "miou", "miou_lower", "miou_upper"]
    columns += ["miou_diff_from_best", "hit_rate", "hit_rate_lower", "hit_rate_upper"]
    if comparison.reference is not None:
        columns += ["miou_pct_decrease", "hit_rate_pct_decrease"]
    print(comparison.table[columns].to_string(index=False, float_format="%.3f"))
    for line in comparison.summary_lines():
        print(line)
    print(f"tables and figures: {args.out}")


def _run_localize_nih(args: argparse.Namespace) -> None:
    """Grad-CAM against NIH's boxes, beside chance and a cross-fitted anatomical prior."""
    from chexviz.data.nih import NIHChestXray14Dataset, read_nih_boxes
    from chexviz.evaluate.localization import (
        score_localization_cross_fitted,
        summarize_localization,
        unscored_boxes,
    )
    from chexviz.explain.gradcam import GradCAM

    model = load_model(args.model)
    _refuse_cropped(model, args.model)
    side = args.nih_image_size
    boxes = read_nih_boxes(args.nih_boxes, drawn_on=(side, side), root=args.data)
    sizes = boxes[["width", "height"]].value_counts()
    print(
        f"{len(boxes)} boxes drawn on {side}x{side} images, scaled to the images' own sizes: "
        + ", ".join(f"{w}x{h} ({n} boxes)" for (w, h), n in sizes.items())
    )
    left = unscored_boxes(boxes, model.labels)
    for reason, rows in left.groupby("reason", sort=False):
        counts = ", ".join(f"{name} {n}" for name, n in rows["nih_label"].value_counts().items())
        print(f"left out {len(rows)} of {len(boxes)} boxes ({reason}): {counts}")
    data = NIHChestXray14Dataset(
        args.data,
        labels=model.labels,
        image_size=model.image_size,
        in_channels=model.in_channels,
        views=None,  # boxes are drawn on PA and AP images alike
        progress=args.progress,
    )
    cam = GradCAM(model, method=args.method)
    table = score_localization_cross_fitted(
        cam, data, boxes, progress=args.progress, seed=args.seed
    )
    summary = summarize_localization(
        table, min_findings=args.min_positives, patients=data.patient_ids
    )
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "localization.csv", index=False)
    summary.to_csv(args.out / "localization_summary.csv")
    print(summary.to_string(float_format="%.3f"))
    labels = summary.drop(index="overall")
    _print_too_few(
        labels,
        [
            f"{row.explained} explained of {row.findings} boxed findings"
            for row in labels.itertuples()
        ],
        args.min_positives,
    )
    print(f"tables: {args.out}")


def _print_too_few(labels: pd.DataFrame, counts: list[str], min_positives: int) -> None:
    """Prints the line naming the labels left out as too few cases, if any, with their counts."""
    from chexviz._internal.cases import TOO_FEW, too_few_line

    line = too_few_line(
        [str(label) for label in labels.index],
        counts,
        (labels["status"] != TOO_FEW).to_numpy(),
        min_positives=min_positives,
        min_negatives=None,
    )
    if line is not None:
        print(line)
