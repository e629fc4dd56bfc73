"""Draws the figures of docs/guide/reports.md and prints the numbers quoted there.

Everything comes from generated data and a small CPU model, so the figures can be rebuilt
anywhere in a few minutes. The model trains on train.csv's patients split 90/10: the 10 %
validation split picks the epoch, tunes the thresholds and supplies the figures' image; the
numbers are measured on valid.csv, which no choice has seen. The anatomical prior is built from
the training split's boxes::

    python docs/scripts/make_report_figures.py            # writes docs/images/report_*.png

The synthetic data set, its image cache and the trained model are kept in ``--work`` so a second
run only redraws.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from chexviz.data.boxes import load_boxes, scale_boxes
from chexviz.data.dataset import CheXpertDataset
from chexviz.data.splits import split_by_patient
from chexviz.data.synthetic import make_synthetic_chexpert
from chexviz.evaluate.faithfulness import perturbation_curve, score_faithfulness
from chexviz.evaluate.localization import (
    anatomical_prior,
    box_iou,
    energy_in_box,
    pointing_game,
    score_localization,
    select_boxes,
    summarize_localization,
)
from chexviz.explain.explanation import Explanation
from chexviz.explain.figures import save_study_figure
from chexviz.explain.gradcam import GradCAM
from chexviz.explain.overlay import map_peak, overlay_heatmap
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.trainer import Trainer

Subset = torch.utils.data.Subset[tuple[torch.Tensor, torch.Tensor]]

DOCS = Path(__file__).resolve().parents[1]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS / "images")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "chexviz-report-figures"
    )
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args()


def _save(figure: Figure, path: Path, dpi: int = 90) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=dpi)
    _report(path)


def _report(path: Path) -> None:
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def _model(args: argparse.Namespace, train: Subset, val: Subset) -> MultiLabelClassifier:
    path = args.work / f"simple_cnn_{args.size}px_{args.epochs}ep_split.safetensors"
    if path.exists():
        return MultiLabelClassifier.load(path)
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=args.size)
    trainer = Trainer(
        model, lr=1e-3, batch_size=32, epochs=args.epochs, device="cpu", progress=False
    )
    trainer.fit(train, val)  # the validation split picks the epoch and tunes the thresholds
    model.save(path)
    return model.eval()


def _boxes_of(boxes: pd.DataFrame, path: str, label: str, size: int) -> np.ndarray:
    rows = boxes[(boxes["Path"] == path) & (boxes["label"] == label)]
    return scale_boxes(rows, size)[["x0", "y0", "x1", "y1"]].to_numpy()


def _channel_figure(explanation: Explanation, label: str, path: Path) -> None:
    """The study's BGR mistake next to the same overlay done right."""
    image, heat = explanation.images[0], explanation.heatmap(label)
    jet = np.asarray(overlay_heatmap(image, heat, cmap="jet"))
    panels = [
        ("jet, channels swapped\n(the study's figures)", jet[..., ::-1]),
        ("jet, RGB", jet),
        ("inferno, RGB (default)", np.asarray(overlay_heatmap(image, heat))),
    ]
    figure = Figure(figsize=(7.5, 2.9), layout="constrained")
    for k, (title, picture) in enumerate(panels):
        axis = figure.add_subplot(1, 3, k + 1)
        axis.imshow(picture)
        axis.set_title(title, fontsize=9)
        axis.set_axis_off()
    figure.suptitle(f"{label}: one Grad-CAM map, three renderings", fontsize=10)
    _save(figure, path)


def _localization_figure(
    explanation: Explanation, boxes: pd.DataFrame, csv_path: str, path: Path
) -> None:
    labels = explanation.classes[0]
    size = int(explanation.images.shape[-1])
    figure = Figure(figsize=(2.6 * len(labels), 3.0), layout="constrained")
    for k, label in enumerate(labels):
        heat = explanation.heatmap(label)
        box = _boxes_of(boxes, csv_path, label, size)
        axis = figure.add_subplot(1, len(labels), k + 1)
        axis.imshow(overlay_heatmap(explanation.images[0], heat))
        for x0, y0, x1, y1 in box:
            # pixel (r, c) covers [c, c + 1): its edges sit at -0.5 in imshow's coordinates
            axis.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1.5)
            )
        peak = map_peak(heat)  # the pointing game's one point
        if peak is not None:
            axis.plot(peak[1], peak[0], marker="+", color="white", markersize=12, mew=2)
        hit = pointing_game(heat, box)
        axis.set_title(
            f"{label}\n{'hit' if hit else 'miss'} · IoU {box_iou(heat, box):.2f} · "
            f"energy {energy_in_box(heat, box):.2f}",
            fontsize=8,
        )
        axis.set_axis_off()
    _save(figure, path)


def _faithfulness_figure(
    model: MultiLabelClassifier, explanation: Explanation, label: str, path: Path
) -> None:
    image, heat = explanation.images[0], explanation.heatmap(label)
    flat = np.zeros(tuple(heat.shape))
    figure = Figure(figsize=(7.5, 2.8), layout="constrained")
    for k, mode in enumerate(("deletion", "insertion")):
        axis = figure.add_subplot(1, 2, k + 1)
        # the random order draws its own field (seed 1), not the one that orders the map's ties
        for name, ranking, style, seed in (
            ("Grad-CAM order", heat, "-", 0),
            ("random order", flat, "--", 1),
        ):
            curve = perturbation_curve(model, image, ranking, label, mode=mode, steps=40, seed=seed)
            axis.plot(
                curve.fractions,
                curve.probabilities,
                style,
                label=f"{name} (AUC {curve.auc:.2f})",
            )
        axis.set_xlabel(f"fraction of pixels {'blurred' if mode == 'deletion' else 'restored'}")
        axis.set_ylabel(f"P({label})")
        axis.set_ylim(0, 1)
        axis.set_title(mode, fontsize=10)
        axis.legend(fontsize=8)
    _save(figure, path)


def main() -> None:
    """Builds data and model if needed, draws the figures and prints the scores."""
    args = _arguments()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.workers)
    release = make_synthetic_chexpert(
        args.work / "data", n_patients=args.patients, valid_patients=40, workers=args.workers
    )
    options = {"image_size": args.size, "cache_dir": args.work / "cache", "progress": False}
    every = CheXpertDataset(release.parent, "train.csv", **options)
    train, val = split_by_patient(every, (0.9, 0.1), seed=0)
    valid = CheXpertDataset(release.parent, "valid.csv", **options)
    train_boxes = load_boxes(release / "train_boxes.csv")
    boxes = load_boxes(release / "valid_boxes.csv")
    model = _model(args, train, val)

    # The figures' image: the validation-split image with the most predicted positives that
    # all carry a box (a choice made on validation, never on the images measured below).
    cam = GradCAM(model)
    best, best_count = 0, -1
    for item in range(len(val)):
        explanation = cam.explain(val[item][0])
        path = every.frame["Path"].iloc[val.indices[item]]
        boxed = set(train_boxes.loc[train_boxes["Path"] == path, "label"])
        positives = explanation.classes[0]
        if positives and set(positives) <= boxed and len(positives) > best_count:
            best, best_count = item, len(positives)
    csv_path = str(every.frame["Path"].iloc[val.indices[best]])
    explanation = cam.explain(val[best][0])
    print(f"figure image (validation split): {csv_path}, positives {explanation.classes[0]}")

    _report(save_study_figure(explanation, args.out / "report_study.png", dpi=80))
    first = explanation.classes[0][0]
    _channel_figure(explanation, first, args.out / "report_channels.png")
    _localization_figure(explanation, train_boxes, csv_path, args.out / "report_localization.png")
    _faithfulness_figure(model, explanation, first, args.out / "report_faithfulness.png")

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.precision", 3)
    prior = anatomical_prior(select_boxes(train_boxes, train), args.size)
    print(f"\nmeasured on valid.csv: {len(valid)} images of 40 patients, {len(boxes)} boxes")
    for mode in ("positives", "true"):
        scores = score_localization(cam, valid, boxes, classes=mode, progress=False, prior=prior)
        print(f"\nlocalisation, classes={mode!r}:\n{summarize_localization(scores)}")
    batch = cam.explain(torch.stack([valid[i][0] for i in range(len(valid))]))
    faithful = score_faithfulness(model, batch, steps=20)
    columns = ["deletion", "deletion_random", "insertion", "insertion_random"]
    print(f"\nfaithfulness over {len(faithful)} maps (mean):")
    print(faithful[columns].mean())
    print("mean spread (std) of the random reference over its 5 fields per image:")
    print(faithful[["deletion_random_std", "insertion_random_std"]].mean())


if __name__ == "__main__":
    main()
