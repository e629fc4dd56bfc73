"""The demo pipeline behind ``chexviz demo``: synthetic data in, trained and explained model out.

It generates (or reuses) the synthetic CheXpert-format data set, splits it by patient, trains a
backbone, evaluates it, explains the test images and scores the heatmaps against the synthetic
ground-truth boxes. Every output is a file in ``out_dir``; [`run_demo`][chexviz.demo.run_demo]
returns the headline figures.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from chexviz._internal.atomic import write_bytes_atomic
from chexviz.data.boxes import load_boxes
from chexviz.data.chexlocalize import read_chexlocalize
from chexviz.data.dataset import CheXpertDataset
from chexviz.data.splits import split_by_patient
from chexviz.data.synthetic import SIGN_LABELS, make_synthetic_chexpert
from chexviz.explain.chexlocalize import run_chexlocalize
from chexviz.explain.gradcam import GradCAM
from chexviz.explain.localization import score_localization, summarize_localization
from chexviz.explain.report import save_study_figure, write_html_report
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.metrics import Metrics
from chexviz.training.trainer import Trainer

logger = logging.getLogger(__name__)

SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)
"""Train, validation and test shares of the demo's patient split."""

DEFAULT_BACKBONE = "simple_cnn"
DEFAULT_IMAGES = 1800
DEFAULT_EPOCHS = 20
DEFAULT_IMAGE_SIZE = 96
DEFAULT_LR = 1e-3
"""Defaults of `run_demo` (and ``chexviz demo``), chosen so that a 2-core CPU finishes in a few
minutes: at 64 px the 8x8 feature map of ``simple_cnn`` localises poorly, at 128 px the rare
signs need more epochs than the time allows."""

_EXPLAIN_BATCH = 32

_FRONTAL_PER_PATIENT = 2.8
"""Frontal images per patient that the synthetic generator draws on average (measured)."""


@dataclass(frozen=True)
class DemoResult:
    """The headline figures of a demo run and where its outputs are.

    Attributes:
        out_dir: The folder holding every output.
        images: Frontal images used (train + validation + test).
        test_images: Images in the test split.
        macro_auroc: Test macro-AUROC over all labels with a defined AUROC.
        sign_macro_auroc: Test macro-AUROC over the labels the synthetic data draws signs for.
        macro_accuracy: Test macro-accuracy at the tuned thresholds (the reference study's metric).
        all_negative_accuracy: Macro-accuracy of the constant "all negative" predictor.
        pointing_game: Share of boxed test findings whose heatmap maximum falls in the box.
        pointing_chance: The same share for a uniformly random point on the same boxes.
        chexlocalize: The CheXlocalize protocol on the synthetic validation patients (never
            trained on), mean over pathologies: ``miou``, ``hit_rate`` and their
            ``_lower``/``_upper`` bounds, ``prior_miou``, ``prior_hit_rate``, ``chance_miou``,
            ``chance_hit_rate``.
        seconds: Wall-clock time of the whole run.
        report: The HTML report.
        model: The saved model.
        data: The synthetic release folder the run used (``CheXpert-v1.0-small``).
        cache: The preprocessed image cache folder the run used.
    """

    out_dir: Path
    images: int
    test_images: int
    macro_auroc: float
    sign_macro_auroc: float
    macro_accuracy: float
    all_negative_accuracy: float
    pointing_game: float
    pointing_chance: float
    chexlocalize: dict[str, float]
    seconds: float
    report: Path
    model: Path
    data: Path
    cache: Path


def default_data_dir() -> Path:
    """The folder where the demo keeps its synthetic data set between runs.

    Returns:
        ``$CHEXVIZ_DATA`` if set, else ``$XDG_CACHE_HOME/chexviz`` (``~/.cache/chexviz``).
    """
    if "CHEXVIZ_DATA" in os.environ:
        return Path(os.environ["CHEXVIZ_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "chexviz"


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    backbone: str = DEFAULT_BACKBONE,
    images: int = DEFAULT_IMAGES,
    epochs: int = DEFAULT_EPOCHS,
    image_size: int = DEFAULT_IMAGE_SIZE,
    lr: float = DEFAULT_LR,
    batch_size: int = 64,
    seed: int = 0,
    figures: int = 4,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> DemoResult:
    """Trains, evaluates and explains a model on the synthetic CheXpert-format data set.

    Writes to ``out_dir``: ``metrics.csv`` (per-label AUROC, accuracy, F1 and the all-negative
    baseline on the test split), ``history.csv``/``history.json``/``curves.png`` (training
    curves), ``figures/*.png`` (study-style figures of a few test images), ``report.html``
    (every explained test image), ``localization.csv`` and ``localization_summary.csv``
    (pointing game, IoU and energy against the synthetic boxes, beside the chance rate),
    ``model.safetensors``, ``summary.json`` and ``chexlocalize/`` (the CheXlocalize protocol
    on the synthetic validation patients: see
    [`run_chexlocalize`][chexviz.explain.chexlocalize.run_chexlocalize]).

    The defaults differ from the reference study's (lr 2e-4, 128 px, 15 epochs, VGG-16 et al.)
    so that the demo finishes in minutes on a 2-core CPU; `examples/reproduce_study.py` keeps
    the study's settings.

    Args:
        out_dir: Output folder (created if missing).
        backbone: A registered backbone name.
        images: About this many frontal images are generated and split 70/10/20 by patient.
        epochs: Training epochs.
        image_size: Side of the square model input.
        lr: Adam learning rate.
        batch_size: Training batch size.
        seed: Seed of the data set, the split and training.
        figures: How many study-style figures to save.
        data_dir: Where the synthetic data set and its image cache live (reused across runs);
            defaults to [`default_data_dir`][chexviz.demo.default_data_dir].
        progress: Show progress bars (only ever on a terminal).

    Returns:
        The headline figures and output paths.

    Raises:
        ValueError: If an argument is out of range (the message names it).
    """
    for name, value, minimum in (
        ("images", images, 50),
        ("epochs", epochs, 1),
        ("image_size", image_size, 16),
        ("figures", figures, 0),
    ):
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_dir) if data_dir is not None else default_data_dir()
    torch.manual_seed(seed)

    patients = max(10, math.ceil(images / _FRONTAL_PER_PATIENT))
    logger.info("synthetic data set: %d patients under %s", patients, data_root)
    folder = make_synthetic_chexpert(
        data_root / f"synthetic-{patients}-{seed}",
        n_patients=patients,
        seed=seed,
        valid_patients=max(20, patients // 5),
        progress=progress,
    )
    cache_dir = data_root / "cache"
    dataset = CheXpertDataset(
        folder,
        image_size=image_size,
        cache_dir=cache_dir,
        progress=progress,
    )
    train, val, test = split_by_patient(dataset, SPLIT_FRACTIONS, seed=seed)
    logger.info("patient split: %d train, %d val, %d test", len(train), len(val), len(test))

    model = MultiLabelClassifier(backbone, image_size=image_size, labels=dataset.labels)
    trainer = Trainer(
        model,
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
        out_dir=out / "checkpoints",
        progress=progress,
    )
    history = trainer.fit(train, val)
    history.to_csv(out / "history.csv")
    history.to_json(out / "history.json")
    history.plot(out / "curves.png")

    metrics = trainer.evaluate(test)
    metrics.to_frame().to_csv(out / "metrics.csv")
    model_path = out / "model.safetensors"
    model.save(model_path)

    boxes = load_boxes(folder / "train_boxes.csv")
    cam = GradCAM(model)
    scores = score_localization(cam, test, boxes, classes="true", progress=progress)
    report = _explain_test_images(cam, test, out, figures)
    scores.to_csv(out / "localization.csv", index=False)
    summary = summarize_localization(scores)
    summary.to_csv(out / "localization_summary.csv")

    localized = _chexlocalize(cam, folder, image_size, out / "chexlocalize", progress)

    # Boxes exist only for SIGN_LABELS, so the pooled "overall" row is the signs' score.
    overall = summary.loc["overall"]
    result = DemoResult(
        out_dir=out,
        images=len(train) + len(val) + len(test),
        test_images=len(test),
        macro_auroc=metrics.macro_auroc,
        sign_macro_auroc=_macro(metrics, SIGN_LABELS),
        macro_accuracy=metrics.macro_accuracy,
        all_negative_accuracy=metrics.macro_all_negative_accuracy,
        pointing_game=float(overall["hit_rate"]),
        pointing_chance=float(overall["chance"]),
        chexlocalize=localized,
        seconds=time.perf_counter() - started,
        report=report,
        model=model_path,
        data=folder,
        cache=cache_dir,
    )
    summary_text = json.dumps(asdict(result), default=str, indent=2) + "\n"
    write_bytes_atomic(out / "summary.json", summary_text.encode())
    return result


def _chexlocalize(
    cam: GradCAM, folder: Path, image_size: int, out: Path, progress: bool
) -> dict[str, float]:
    """The CheXlocalize protocol on the validation patients; the mean row of its summary."""
    valid = CheXpertDataset(
        folder, "valid.csv", image_size=image_size, frontal_only=False, progress=progress
    )
    truth = read_chexlocalize(folder / "gt_segmentations_val.json")
    scores = run_chexlocalize(cam, valid, truth, out, overlays=4, progress=progress)
    mean = scores.summary.loc["mean"]
    keys = ["miou", "miou_lower", "miou_upper", "hit_rate", "hit_rate_lower", "hit_rate_upper"]
    keys += ["prior_miou", "prior_hit_rate", "chance_miou", "chance_hit_rate"]
    return {key: float(mean[key]) for key in keys}


def _macro(metrics: Metrics, labels: Sequence[str]) -> float:
    values = [metrics.auroc[metrics.labels.index(label)] for label in labels]
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


def _explain_test_images(
    cam: GradCAM,
    test: torch.utils.data.Subset[tuple[torch.Tensor, torch.Tensor]],
    out: Path,
    figures: int,
) -> Path:
    """Explains every test image's predicted positives; saves figures and the HTML report."""
    base = test.dataset
    if not isinstance(base, CheXpertDataset):
        raise TypeError(f"expected a Subset of a CheXpertDataset, got one of {type(base).__name__}")
    explanations = []
    names: list[str] = []
    indices = list(test.indices)
    for start in range(0, len(indices), _EXPLAIN_BATCH):
        chunk = indices[start : start + _EXPLAIN_BATCH]
        images = torch.stack([base[i][0] for i in chunk])
        explanations.append(cam.explain(images))
        names.extend(str(base.frame["Path"].iloc[i]) for i in chunk)
    (out / "figures").mkdir(exist_ok=True)
    with_positives = [
        (explanation, i)
        for explanation in explanations
        for i in range(len(explanation))
        if explanation.classes[i]
    ]
    for rank, (explanation, i) in enumerate(with_positives[:figures]):
        save_study_figure(explanation, out / "figures" / f"test_{rank:02d}.png", index=i)
    return write_html_report(explanations, out / "report.html", names=names)
