"""The demo pipeline behind ``chexviz demo``: synthetic data in, trained and explained model out.

It generates (or reuses) the synthetic CheXpert-format data set, splits it by patient, trains a
backbone, evaluates it, explains the test images and scores the heatmaps against the synthetic
ground-truth boxes. Every output is a file in ``out_dir``; [`run_demo`][chexviz.demo.run_demo]
returns the headline figures, each beside its strongest trivial baseline, and
[`format_summary`][chexviz.demo.format_summary] lays them out as ``chexviz demo`` prints them.

On a terminal the run shows progress bars (generation, caching, each training epoch,
explanation, localisation). Its stages, epochs and generated patients are progress lines on the
``chexviz.progress`` logger (INFO): ``chexviz demo`` shows them on standard error, timestamped
when that is not a terminal; a library caller sees them when it configures logging.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from chexviz._internal.atomic import write_bytes_atomic
from chexviz._internal.cases import (
    DEFAULT_MIN_NEGATIVES,
    DEFAULT_MIN_POSITIVES,
    TOO_FEW,
    enough_cases,
)
from chexviz._internal.progress import progress_logger
from chexviz._version import __version__
from chexviz.data.boxes import load_boxes, scale_boxes
from chexviz.data.chexlocalize import read_chexlocalize
from chexviz.data.dataset import CheXpertDataset
from chexviz.data.splits import split_by_patient
from chexviz.data.synthetic import SIGN_LABELS, make_synthetic_chexpert
from chexviz.evaluate.chexlocalize import run_chexlocalize
from chexviz.evaluate.compare import compare_methods
from chexviz.evaluate.external import internal_metrics_metadata
from chexviz.evaluate.localization import (
    anatomical_prior,
    score_localization,
    select_boxes,
    summarize_localization,
)
from chexviz.explain.explanation import Explanation
from chexviz.explain.figures import save_study_figure
from chexviz.explain.gradcam import GradCAM
from chexviz.explain.integrated_gradients import IntegratedGradients
from chexviz.explain.report import write_html_report
from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.metrics import Metrics, evaluation_targets
from chexviz.training.trainer import Trainer

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_EPOCHS",
    "DEFAULT_IMAGES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_LR",
    "SPLIT_FRACTIONS",
    "DemoResult",
    "Figure",
    "default_data_dir",
    "demo_figures",
    "format_summary",
    "run_demo",
    "verdict",
]

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

_STAGES = 8
_DEMO_IG_STEPS = 8
"""Integrated Gradients steps in the demo (50 by default): each step is a forward pass."""


@dataclass(frozen=True)
class DemoResult:
    """The headline figures of a demo run, their baselines, and where its outputs are.

    Classification figures are on the test patients, scored against the fixed answer key
    (uncertain labels negative, see
    [`evaluation_targets`][chexviz.training.metrics.evaluation_targets]).

    Attributes:
        out_dir: The folder holding every output.
        images: Frontal images used (train + validation + test).
        test_images: Images in the test split.
        macro_auroc: Test macro-AUROC over all labels with a defined AUROC (chance: 0.5).
        sign_macro_auroc: Test macro-AUROC over the labels the synthetic data draws signs for.
        sign_macro_auroc_uncertain_excluded: The same with uncertain labels left out instead
            of counted as negative.
        competition_auroc: Mean test AUROC over the five CheXpert competition labels.
        accuracy_at_half: Mean per-label accuracy at probability 0.5, the reference study's
            metric (Keras' ``binary_accuracy``).
        accuracy_tuned: Mean per-label accuracy at the thresholds tuned on validation.
        all_negative_accuracy: Mean accuracy of the constant "all negative" predictor.
        majority_accuracy: Mean accuracy of the per-label majority class (the best constant).
        boxed_findings: Boxed test findings scored for localisation.
        pointing_game: Share of them whose Grad-CAM peak falls in the box.
        pointing_chance: The same share for a uniformly random point.
        pointing_prior: The same share for the anatomical prior (mean training box per label).
        iou: Mean IoU of the Grad-CAM maps (at 0.5) with the boxes.
        iou_prior: The same for the anatomical prior.
        energy: Mean share of the Grad-CAM maps' mass inside the boxes.
        energy_prior: The same for the anatomical prior (a flat map's is ``pointing_chance``).
        chexlocalize: The CheXlocalize protocol on the synthetic validation patients (never
            trained on), mean over pathologies: ``miou``, ``hit_rate`` and their
            ``_lower``/``_upper`` bounds, ``prior_miou``, ``prior_hit_rate``, ``chance_miou``,
            ``chance_hit_rate``.
        seconds: Wall-clock time of the whole run.
        report: The HTML report.
        model: The saved model.
        data: The synthetic release folder the run used (``CheXpert-v1.0-small``).
        cache: The preprocessed image cache folder the run used.
        methods: The comparison of explanation methods on the CheXlocalize validation
            patients, one line per method and a last line naming the best with its interval
            (see ``MethodComparison.summary_lines``).
    """

    out_dir: Path
    images: int
    test_images: int
    macro_auroc: float
    sign_macro_auroc: float
    sign_macro_auroc_uncertain_excluded: float
    competition_auroc: float
    accuracy_at_half: float
    accuracy_tuned: float
    all_negative_accuracy: float
    majority_accuracy: float
    boxed_findings: int
    pointing_game: float
    pointing_chance: float
    pointing_prior: float
    iou: float
    iou_prior: float
    energy: float
    energy_prior: float
    chexlocalize: dict[str, float]
    seconds: float
    report: Path
    model: Path
    data: Path
    cache: Path
    methods: tuple[str, ...] = ()


class _Stages:
    """Announces the stages, one progress line each (``chexviz.progress``, INFO).

    The command line shows them between the bars on a terminal and timestamped elsewhere.
    """

    def __init__(self) -> None:
        self.number = 0
        self.announced: list[str] = []

    def __call__(self, message: str, *args: object) -> None:
        self.number += 1
        text = message % args if args else message
        self.announced.append(text)
        progress_logger.info("[%d/%d] %s", self.number, _STAGES, text)


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

    Writes to ``out_dir``: ``metrics.csv`` (per-label AUROC, accuracy at 0.5 and at the tuned
    thresholds, F1 and the all-negative and majority-class baselines on the test split, uncertain
    labels negative) and ``metrics_uncertain_excluded.csv`` (the same with uncertain labels left
    out), ``history.csv``/``history.json``/``curves.png`` (training curves), ``figures/*.png``
    (study-style figures of a few test images), ``report.html`` (every explained test image with
    its answer key and boxes), ``localization.csv`` and ``localization_summary.csv`` (pointing
    game, IoU and energy against the synthetic boxes, beside chance and the anatomical prior
    built from the training split's boxes), ``chexlocalize/`` (the CheXlocalize protocol on the
    synthetic validation patients: see
    [`run_chexlocalize`][chexviz.evaluate.chexlocalize.pipeline.run_chexlocalize]),
    ``model.safetensors`` and ``summary.json`` (the fields of
    [`DemoResult`][chexviz.demo.DemoResult]).

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
        progress: Show progress bars (only ever on a terminal). The stage and epoch lines
            are logged either way (see the module's description).

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
    stage = _Stages()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_dir) if data_dir is not None else default_data_dir()
    torch.manual_seed(seed)

    patients = max(10, math.ceil(images / _FRONTAL_PER_PATIENT))
    stage("synthetic data: %d patients under %s", patients, data_root)
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

    stage(
        "training %s for %d epochs on %d images (%d to validate)",
        backbone,
        epochs,
        len(train),
        len(val),
    )
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

    stage("evaluating on the %d test images", len(test))
    metrics = trainer.evaluate(test)
    excluded = trainer.evaluate(test, uncertain="exclude")
    metrics.to_frame().to_csv(out / "metrics.csv")
    excluded.to_frame().to_csv(out / "metrics_uncertain_excluded.csv")
    model_path = out / "model.safetensors"
    # The test metrics travel in the weight file (`chexviz evaluate --dataset` shows them).
    model.save(model_path, extra_metadata=internal_metrics_metadata(metrics))

    stage("scoring Grad-CAM against the test boxes, beside chance and the anatomical prior")
    boxes = load_boxes(folder / "train_boxes.csv")
    # The prior learns where each finding sits from the training split only.
    prior = anatomical_prior(select_boxes(boxes, train), image_size)
    cam = GradCAM(model)
    scores = score_localization(cam, test, boxes, classes="true", progress=progress, prior=prior)
    scores.to_csv(out / "localization.csv", index=False)
    owners = [_test_items(test).patient_ids[i] for i in test.indices]
    summary = summarize_localization(scores, patients=owners)
    summary.to_csv(out / "localization_summary.csv")

    stage("scoring Grad-CAM masks with the CheXlocalize protocol on the validation patients")
    localized, localized_table = _chexlocalize(
        cam, folder, image_size, out / "chexlocalize", progress
    )

    stage("comparing explanation methods on the same validation X-rays")
    methods = _compare_methods(model, folder, image_size, out / "methods", progress)

    stage("explaining the test images' predicted positives and missed findings")
    key = evaluation_targets(test)
    explanations, names = _explain(cam, model, test, key, progress)
    (out / "figures").mkdir(exist_ok=True)
    for rank, (explanation, i) in enumerate(_with_positives(explanations)[:figures]):
        save_study_figure(explanation, out / "figures" / f"test_{rank:02d}.png", index=i)

    # Boxes exist only for SIGN_LABELS, so the pooled "overall" row is the signs' score.
    overall = summary.loc["overall"]
    result = DemoResult(
        out_dir=out,
        images=len(train) + len(val) + len(test),
        test_images=len(test),
        macro_auroc=metrics.macro_auroc,
        sign_macro_auroc=_macro(metrics, SIGN_LABELS),
        sign_macro_auroc_uncertain_excluded=_macro(excluded, SIGN_LABELS),
        competition_auroc=metrics.competition_auroc,
        accuracy_at_half=metrics.macro_binary_accuracy,
        accuracy_tuned=metrics.macro_accuracy,
        all_negative_accuracy=metrics.macro_all_negative_accuracy,
        majority_accuracy=metrics.macro_majority_accuracy,
        boxed_findings=int(overall["explained"]),
        pointing_game=float(overall["hit_rate"]),
        pointing_chance=float(overall["chance"]),
        pointing_prior=float(overall["prior_hit_rate"]),
        iou=float(overall["iou"]),
        iou_prior=float(overall["prior_iou"]),
        energy=float(overall["energy"]),
        energy_prior=float(overall["prior_energy"]),
        chexlocalize=localized,
        seconds=math.nan,
        report=out / "report.html",
        model=model_path,
        data=folder,
        cache=cache_dir,
        methods=methods,
    )

    stage("writing the HTML report")
    headline = demo_figures(result)
    write_html_report(
        explanations,
        result.report,
        names=names,
        title=f"chexviz demo: {backbone} on {len(test)} synthetic test images",
        truth=key,
        boxes=_boxes_per_image(boxes, test, image_size),
        notes=_report_notes(len(test)),
        verdict=verdict(headline),
        not_learnable=[label for label in dataset.labels if label not in SIGN_LABELS],
        summaries={
            "Every headline figure against every baseline it has to beat": _verdict_table(headline),
            "Localisation of the boxed test findings: Grad-CAM, chance and the anatomical "
            "prior": summary,
            "CheXlocalize protocol on the validation patients (valid.csv): Grad-CAM masks, "
            "the whole image and the anatomical prior": localized_table,
            f"Classification on the {len(test)} test images (uncertain labels negative)": (
                _classification_table(metrics, excluded, test, owners)
            ),
        },
    )
    result = replace(result, seconds=time.perf_counter() - started)
    summary_json = {**asdict(result), "stages": stage.announced, "environment": _environment()}
    summary_text = json.dumps(summary_json, default=str, indent=2) + "\n"
    write_bytes_atomic(out / "summary.json", summary_text.encode())
    return result


def _chexlocalize(
    cam: GradCAM, folder: Path, image_size: int, out: Path, progress: bool
) -> tuple[dict[str, float], pd.DataFrame]:
    """The CheXlocalize protocol on the validation patients: its mean row and a report table.

    The table has, per pathology, its status, cases, mIoU and hit rate with their intervals,
    each beside the whole image or a random point and the anatomical prior.
    """
    valid = CheXpertDataset(
        folder, "valid.csv", image_size=image_size, frontal_only=False, progress=progress
    )
    truth = read_chexlocalize(folder / "gt_segmentations_val.json")
    scores = run_chexlocalize(cam, valid, truth, out, overlays=4, progress=progress)
    mean = scores.summary.loc["mean"]
    keys = ["miou", "miou_lower", "miou_upper", "hit_rate", "hit_rate_lower", "hit_rate_upper"]
    keys += ["prior_miou", "prior_hit_rate", "chance_miou", "chance_hit_rate"]
    frame = scores.summary

    def with_interval(name: str) -> list[str]:
        bounds = frame[[name, f"{name}_lower", f"{name}_upper"]].to_numpy(dtype=np.float64)
        return [
            "—" if math.isnan(value) else f"{value:.3f} [{lower:.3f}, {upper:.3f}]"
            for value, lower, upper in bounds
        ]

    table = pd.DataFrame(
        {
            "status": frame["status"],
            "positives": frame["positives"],
            "patients": frame["patients"],
            "mIoU [95% CI]": with_interval("miou"),
            "mIoU, whole image": frame["chance_miou"],
            "mIoU, anatomical prior": frame["prior_miou"],
            "hit rate [95% CI]": with_interval("hit_rate"),
            "hit rate, random point": frame["chance_hit_rate"],
            "hit rate, anatomical prior": frame["prior_hit_rate"],
        },
        index=pd.Index(frame.index, name="pathology"),
    )
    return {key: float(mean[key]) for key in keys}, table


def _report_notes(test_images: int) -> list[str]:
    """What the report says first: where its images come from, and the two "validation"s."""
    train, validation, test = (round(100 * share) for share in SPLIT_FRACTIONS)
    return [
        f"The {test_images} test images come from a patient split of train.csv "
        f"({train}/{validation}/{test} train/validation/test by patient, no patient in two "
        "parts), which is why their names start with train/.",
        "Two meanings of validation meet here: the demo's validation split of train.csv "
        f"({validation}% of its patients) picks the best epoch and tunes the thresholds; "
        "CheXpert's own validation set, valid.csv (the images CheXlocalize annotates), is "
        "never trained or tuned on and is where the CheXlocalize protocol scores the masks.",
    ]


def _compare_methods(
    model: MultiLabelClassifier, folder: Path, image_size: int, out: Path, progress: bool
) -> tuple[str, ...]:
    """Methods side by side by the CheXlocalize protocol on the validation patients.

    Otsu's method for every method (tuning on the set it scores would flatter them), and
    Integrated Gradients with 8 steps instead of 50 to keep the demo short.
    """
    valid = CheXpertDataset(
        folder, "valid.csv", image_size=image_size, frontal_only=False, progress=progress
    )
    truth = read_chexlocalize(folder / "gt_segmentations_val.json")
    methods: dict[str, str | Callable[[torch.nn.Module], IntegratedGradients]] = {
        name: name for name in ("gradcam", "gradcam++", "layercam", "eigencam")
    }
    methods[f"ig ({_DEMO_IG_STEPS} steps)"] = functools.partial(
        IntegratedGradients, n_steps=_DEMO_IG_STEPS
    )
    results = compare_methods(
        model, methods=methods, chexlocalize=(valid, truth), out_dir=out, progress=progress
    )
    assert results.chexlocalize is not None
    return tuple(results.chexlocalize.summary_lines())


@dataclass(frozen=True)
class Figure:
    """One headline figure of a demo run beside the trivial baselines it has to beat.

    Attributes:
        name: What it measures, as the summary prints it.
        value: The figure (NaN when undefined, e.g. an AUROC without positives).
        baselines: Baseline name -> the baseline's value on the same figure.
        interval: Its 95% confidence interval, where one was computed.
        undefined_because: Why the figure is NaN, where the run knows (the verdict says it).
    """

    name: str
    value: float
    baselines: dict[str, float]
    interval: tuple[float, float] | None = None
    undefined_because: str = ""


def demo_figures(result: DemoResult) -> list[Figure]:
    """Every headline figure of a demo run, each with every baseline the run computed for it.

    Args:
        result: What [`run_demo`][chexviz.demo.run_demo] returned.

    Returns:
        The figures in the order ``chexviz demo`` prints them.
    """
    chance = {"chance": 0.5}
    constants = {
        "all-negative": result.all_negative_accuracy,
        "majority class": result.majority_accuracy,
    }
    located = result.chexlocalize
    # Localisation summaries score a label only from DEFAULT_MIN_POSITIVES findings on; a
    # pooled figure is NaN when no label got there (a small demo), which is not a loss.
    too_few = (
        f"too few cases: no label has {DEFAULT_MIN_POSITIVES} findings to score "
        "(chexviz localize --min-positives lowers the minimum)"
    )
    return [
        Figure("macro-AUROC, the drawn signs", result.sign_macro_auroc, chance),
        Figure(
            "macro-AUROC, signs, uncertain labels left out",
            result.sign_macro_auroc_uncertain_excluded,
            chance,
        ),
        Figure("macro-AUROC, all 14 labels", result.macro_auroc, chance),
        Figure("mean AUROC, 5 CheXpert competition labels", result.competition_auroc, chance),
        Figure("accuracy at 0.5 (the study's metric)", result.accuracy_at_half, constants),
        Figure("accuracy at the tuned thresholds", result.accuracy_tuned, constants),
        Figure(
            f"pointing game, {result.boxed_findings} boxed findings",
            result.pointing_game,
            {"random point": result.pointing_chance, "anatomical prior": result.pointing_prior},
            undefined_because=too_few,
        ),
        Figure(
            "IoU with the boxes",
            result.iou,
            {"anatomical prior": result.iou_prior},
            undefined_because=too_few,
        ),
        Figure(
            "energy in the boxes",
            result.energy,
            # A flat map puts the box's share of the image in it: the random point's chance.
            {"flat map": result.pointing_chance, "anatomical prior": result.energy_prior},
            undefined_because=too_few,
        ),
        Figure(
            "CheXlocalize mIoU",
            located["miou"],
            {"whole image": located["chance_miou"], "anatomical prior": located["prior_miou"]},
            (located["miou_lower"], located["miou_upper"]),
            undefined_because=too_few,
        ),
        Figure(
            "CheXlocalize hit rate",
            located["hit_rate"],
            {
                "random point": located["chance_hit_rate"],
                "anatomical prior": located["prior_hit_rate"],
            },
            (located["hit_rate_lower"], located["hit_rate_upper"]),
            undefined_because=too_few,
        ),
    ]


def verdict(figures: Sequence[Figure]) -> list[str]:
    """Names every figure that does not beat one of its baselines, and those that beat them all.

    A figure beats a baseline when it is strictly higher (every demo figure is "higher is
    better"); a tie is not a win. An undefined figure or baseline (NaN) is named as such rather
    than counted either way.

    Args:
        figures: The figures with their baselines (see
            [`demo_figures`][chexviz.demo.demo_figures]).

    Returns:
        One line per baseline that some figure does not beat (``does not beat all-negative on:
        accuracy at the tuned thresholds (0.691 against 0.857)``), in the order the baselines
        first appear, then one line for the undefined figures and one naming the figures that
        beat every baseline; a line is left out when it would be empty.
    """
    losses: dict[str, list[str]] = {}
    undefined: list[str] = []
    wins: list[str] = []
    for figure in figures:
        unbeaten = _unbeaten(figure)
        if unbeaten is None:
            why = figure.undefined_because if math.isnan(figure.value) else ""
            undefined.append(f"{figure.name} ({why})" if why else figure.name)
        elif not unbeaten:
            wins.append(figure.name)
        for baseline in unbeaten or ():
            losses.setdefault(baseline, []).append(
                f"{figure.name} ({figure.value:.3f} against {figure.baselines[baseline]:.3f})"
            )
    lines = [f"does not beat {name} on: {'; '.join(names)}" for name, names in losses.items()]
    if undefined:
        lines.append(f"undefined, so not compared: {'; '.join(undefined)}")
    if wins:
        lines.append(f"beats every baseline on: {'; '.join(wins)}")
    return lines


def _unbeaten(figure: Figure) -> list[str] | None:
    """The baselines the figure does not beat, or None when it or one of them is undefined."""
    if math.isnan(figure.value) or any(math.isnan(v) for v in figure.baselines.values()):
        return None
    return [name for name, value in figure.baselines.items() if not figure.value > value]


def format_summary(result: DemoResult, *, backbone: str, epochs: int) -> str:
    """The figures of a demo run as ``chexviz demo`` prints them, each beside its baselines.

    The closing lines are the [`verdict`][chexviz.demo.verdict]: every figure that does not
    beat one of its baselines, by baseline, then the figures that beat them all.

    Args:
        result: What [`run_demo`][chexviz.demo.run_demo] returned.
        backbone: The backbone it trained (for the first line).
        epochs: The epochs it trained (for the first line).

    Returns:
        A few lines of text, the last naming the report.
    """
    figures = demo_figures(result)
    lines = [
        f"chexviz demo: {result.images} synthetic frontal images, {backbone}, {epochs} epochs, "
        f"{result.seconds:.0f} s; on the {result.test_images} test images",
        "(CheXlocalize: on the validation patients, mean over pathologies, with its 95% CI):",
        f"  {'':45} {'chexviz':>8}   baselines",
    ]
    for figure in figures:
        shown = ", ".join(f"{name} {value:.3f}" for name, value in figure.baselines.items())
        if figure.interval is not None:
            lower, upper = figure.interval
            shown = f"[{lower:.3f}, {upper:.3f}]; {shown}"
        lines.append(f"  {figure.name:45} {figure.value:8.3f}   {shown}")
    lines += [f"  {line}" for line in verdict(figures)]
    if result.methods:
        lines.append(
            "  explanation methods, CheXlocalize on the validation patients (Otsu; mean over "
            "pathologies, 95% CI; IG with fewer steps):"
        )
        lines += [f"    {line}" for line in result.methods]
    lines.append(f"  report: {result.report}")
    return "\n".join(lines)


def _verdict_table(figures: Sequence[Figure]) -> pd.DataFrame:
    """The report's view of the verdict: each figure, its baselines and what it does not beat."""
    rows = {}
    for figure in figures:
        unbeaten = _unbeaten(figure)
        if unbeaten is None:
            outcome = "undefined"
        else:
            outcome = f"does not beat {', '.join(unbeaten)}" if unbeaten else "beats every baseline"
        rows[figure.name] = {
            "chexviz": figure.value,
            "baselines": ", ".join(f"{n} {v:.3f}" for n, v in figure.baselines.items()),
            "verdict": outcome,
        }
    table: pd.DataFrame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("figure")
    return table


def _environment() -> dict[str, object]:
    """What the figures depend on beyond the seed: they vary a little across these."""
    return {
        "chexviz": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _macro(metrics: Metrics, labels: Sequence[str]) -> float:
    values = [metrics.auroc[metrics.labels.index(label)] for label in labels]
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


def _classification_table(
    metrics: Metrics,
    excluded: Metrics,
    test: torch.utils.data.Subset[tuple[torch.Tensor, torch.Tensor]],
    owners: Sequence[object],
) -> pd.DataFrame:
    frame = metrics.to_frame()
    key = evaluation_targets(test)
    assert key is not None  # a CheXpertDataset keeps its raw label cells
    patients = np.asarray([str(owner) for owner in owners])
    per_label = [len(set(patients[~np.isnan(key[:, j])])) for j in range(key.shape[1])]
    positives = frame["positives"].to_numpy(dtype=np.float64)
    negatives = (frame["support"] - frame["positives"]).to_numpy(dtype=np.float64)
    enough = enough_cases(positives, negatives, DEFAULT_MIN_POSITIVES, DEFAULT_MIN_NEGATIVES)
    status = [
        "drawn nowhere"
        if label not in SIGN_LABELS and label != "macro"
        else ("scored" if ok or label == "macro" else TOO_FEW)
        for label, ok in zip(frame.index, enough, strict=True)
    ]
    table: pd.DataFrame = pd.DataFrame(
        {
            "status": status,
            "AUROC": frame["auroc"],
            "AUROC, uncertain left out": excluded.to_frame()["auroc"],
            "accuracy at 0.5": frame["binary_accuracy"],
            "accuracy, tuned": frame["accuracy"],
            "all-negative": frame["all_negative_accuracy"],
            "majority class": frame["majority_accuracy"],
            "positives": frame["positives"],
            "negatives": frame["support"] - frame["positives"],
            "images": frame["support"],
            "patients": [*per_label, len(set(patients))],
        }
    )
    return table


def _test_items(
    test: torch.utils.data.Subset[tuple[torch.Tensor, torch.Tensor]],
) -> CheXpertDataset:
    base = test.dataset
    if not isinstance(base, CheXpertDataset):
        raise TypeError(f"expected a Subset of a CheXpertDataset, got one of {type(base).__name__}")
    return base


def _explain(
    cam: GradCAM,
    model: MultiLabelClassifier,
    test: torch.utils.data.Subset[tuple[torch.Tensor, torch.Tensor]],
    key: np.ndarray | None,
    progress: bool,
) -> tuple[list[Explanation], list[str]]:
    """Explains every test image's predicted positives and missed findings, in batches.

    A missed finding (positive in the answer key ``key``, predicted negative) is explained in
    the same Grad-CAM pass as the positives, so the report can show where the model looked.
    """
    base = _test_items(test)
    model.eval()  # predict_proba needs inference mode's batch norm and dropout
    explanations = []
    names: list[str] = []
    indices = list(test.indices)
    with tqdm(
        total=len(indices), unit="img", desc="explaining", disable=None if progress else True
    ) as bar:
        for start in range(0, len(indices), _EXPLAIN_BATCH):
            chunk = indices[start : start + _EXPLAIN_BATCH]
            images = torch.stack([base[i][0] for i in chunk])
            device = model.thresholds.device  # the model may sit on a GPU
            positive = (model.predict_proba(images.to(device)) >= model.thresholds).cpu().numpy()
            if key is not None:
                positive |= key[start : start + len(chunk)] == 1
            wanted = [np.flatnonzero(row).tolist() for row in positive]
            explanations.append(cam.explain(images, classes=wanted))
            names.extend(str(base.frame["Path"].iloc[i]) for i in chunk)
            bar.update(len(chunk))
    return explanations, names


def _with_positives(explanations: list[Explanation]) -> list[tuple[Explanation, int]]:
    return [
        (explanation, i)
        for explanation in explanations
        for i in range(len(explanation))
        if explanation.classes[i]
    ]


def _boxes_per_image(
    boxes: pd.DataFrame,
    test: torch.utils.data.Subset[tuple[torch.Tensor, torch.Tensor]],
    size: int,
) -> list[dict[str, np.ndarray] | None]:
    """Per test image, label -> its boxes in the model input's pixels (None without boxes)."""
    base = _test_items(test)
    scaled = scale_boxes(select_boxes(boxes, test), size)
    by_path: dict[str, dict[str, np.ndarray]] = {}
    for (path, label), group in scaled.groupby(["Path", "label"], sort=False):
        by_path.setdefault(str(path), {})[str(label)] = group[["x0", "y0", "x1", "y1"]].to_numpy(
            dtype=np.float64
        )
    return [by_path.get(str(base.frame["Path"].iloc[i])) for i in test.indices]
