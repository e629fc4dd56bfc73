"""``chexviz evaluate``: a model's metrics on CheXpert, or on another data set with CIs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexviz.cli._common import load_model

if TYPE_CHECKING:
    import pandas as pd

    from chexviz.data.dataset import CheXpertDataset
    from chexviz.training.metrics import EvaluationPolicy, Metrics
    from chexviz.training.trainer import Trainer


def run_evaluate(args: argparse.Namespace) -> None:
    """Runs ``chexviz evaluate``: on a CheXpert CSV, or with ``--dataset`` on another layout."""
    if args.dataset is not None:
        _run_external(args)
        return
    if args.split is not None:
        raise ValueError("--split needs --dataset (for a CheXpert CSV, use --csv)")
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.training.trainer import Trainer

    model = load_model(args.model)
    data = CheXpertDataset(
        args.data,
        args.csv,
        image_size=model.image_size,
        in_channels=model.in_channels,
        crop=model.input_crop,
        labels=model.labels,
        progress=args.progress,
    )
    trainer = Trainer(model, device=args.device, progress=args.progress)
    print_metrics(
        trainer, data, args.out, min_positives=args.min_positives, min_negatives=args.min_negatives
    )


def print_metrics(
    trainer: Trainer,
    data: CheXpertDataset,
    out: Path | None,
    *,
    quiet: bool = False,
    min_positives: int | None = None,
    min_negatives: int | None = None,
) -> Metrics:
    """Prints (and writes into ``out``) the metrics, uncertain labels negative then left out.

    Every process must call it (evaluation is collective under torchrun); ``quiet`` ones
    evaluate without printing. Each table shows the negatives and patients of every label;
    a label with too few positive or negative patients shows no AUROC and is left out of
    the printed means (the rule of ``chexviz._internal.cases``).

    Returns:
        The metrics with uncertain labels counted as negative.
    """
    tables = {
        "metrics.csv": ("uncertain labels counted as negative", trainer.evaluate(data)),
        "metrics_uncertain_excluded.csv": (
            "uncertain labels left out",
            trainer.evaluate(data, uncertain="exclude"),
        ),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if quiet:
        return tables["metrics.csv"][1]
    from chexviz._internal.cases import DEFAULT_MIN_NEGATIVES, DEFAULT_MIN_POSITIVES
    from chexviz.data.labels import COMPETITION_LABELS

    minimum = (
        DEFAULT_MIN_POSITIVES if min_positives is None else min_positives,
        DEFAULT_MIN_NEGATIVES if min_negatives is None else min_negatives,
    )
    for number, (name, (heading, metrics)) in enumerate(tables.items()):
        uncertain: EvaluationPolicy = "negative" if name == "metrics.csv" else "exclude"
        frame, line = _counted_frame(metrics, data, uncertain, *minimum)
        if out is not None:
            frame.to_csv(out / name)
        print(f"{chr(10) if number else ''}{data.csv_path.name}, {heading}:")
        print(frame.to_string(float_format="%.3f"))
        if line is not None:
            print(line)
        competition = [label for label in COMPETITION_LABELS if label in frame.index]
        scored = frame.loc[competition, "auroc"].dropna()
        print(
            f"mean AUROC over the {len(scored)} of {len(competition)} competition labels with "
            f"enough cases {scored.mean():.3f} (chance 0.500)"
        )
    return tables["metrics.csv"][1]


def _counted_frame(
    metrics: Metrics,
    data: CheXpertDataset,
    uncertain: EvaluationPolicy,
    min_positives: int,
    min_negatives: int,
) -> tuple[pd.DataFrame, str | None]:
    """The metrics table with negatives, patients and status per label, and the too-few line.

    A label with too few positive or negative patients keeps its counts and accuracies but
    loses its AUROC, and the macro AUROC is over the other labels.
    """
    import numpy as np

    from chexviz._internal.cases import TOO_FEW, enough_cases, too_few_line
    from chexviz.training.metrics import evaluation_targets

    key = evaluation_targets(data, uncertain=uncertain)
    assert key is not None  # a CheXpertDataset keeps its raw label cells
    patients = np.asarray([str(patient) for patient in data.patient_ids])

    def patients_where(mask: np.ndarray) -> np.ndarray:
        return np.asarray([len(set(patients[mask[:, j]])) for j in range(mask.shape[1])])

    positive = patients_where(key == 1)
    negative = patients_where(key == 0)
    enough = enough_cases(positive, negative, min_positives, min_negatives)
    frame = metrics.to_frame()
    labels = list(metrics.labels)
    frame["negatives"] = frame["support"] - frame["positives"]
    frame["patients"] = [*patients_where(~np.isnan(key)), len(set(patients))]
    frame["status"] = [*("scored" if ok else TOO_FEW for ok in enough), ""]
    first = ["status", "support", "positives", "negatives", "patients"]
    frame = frame[first + [column for column in frame.columns if column not in first]]
    frame.loc[[label for label, ok in zip(labels, enough, strict=True) if not ok], "auroc"] = np.nan
    frame.loc["macro", "auroc"] = frame.loc[labels, "auroc"].mean()
    counts = [
        f"{metrics.positives[j]} positive images of {positive[j]} patients, "
        f"{metrics.support[j] - metrics.positives[j]} negative of {negative[j]}"
        for j, label in enumerate(labels)
    ]
    line = too_few_line(
        labels, counts, enough, min_positives=min_positives, min_negatives=min_negatives
    )
    return frame, line


EXTERNAL_SPLITS = {
    "chexpert": ("valid", ("train", "valid")),
    "mimic": ("test", ("train", "validate", "test", "all")),
    "nih": ("test", ("train_val", "test", "all")),
}


def add_external_arguments(evaluate: argparse.ArgumentParser) -> None:
    """Adds ``evaluate``'s options for another data set (``--dataset`` and what goes with it)."""
    evaluate.add_argument(
        "--dataset",
        choices=list(EXTERNAL_SPLITS),
        default=None,
        help="validate on this data set's layout (--data is its folder) with bootstrap CIs",
    )
    evaluate.add_argument(
        "--split",
        default=None,
        help="with --dataset, the official split: chexpert valid or train; mimic train, "
        "validate, test or all; nih train_val, test or all (default: valid for chexpert, test "
        "for the others)",
    )
    evaluate.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="with --dataset, bootstrap replicates over patients",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="with --dataset, bootstrap seed")
    evaluate.add_argument(
        "--cache-dir", type=Path, default=None, help="with --dataset, preprocessed image cache"
    )


def _run_external(args: argparse.Namespace) -> None:
    import json

    from chexviz.data.dataset import ChestXrayDataset, CheXpertDataset
    from chexviz.data.label_mapping import NIH_UNMAPPED
    from chexviz.data.mimic import MIMICCXRDataset
    from chexviz.data.nih import NIHChestXray14Dataset
    from chexviz.evaluate.external import read_internal_metrics, validate_externally

    default, splits = EXTERNAL_SPLITS[args.dataset]
    split = args.split or default
    if split not in splits:
        raise ValueError(f"--split for {args.dataset} must be one of {list(splits)}, got {split!r}")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be at least 0, got {args.bootstrap}")
    official: Any = None if split == "all" else split  # checked against the choices above
    model = load_model(args.model)
    common: dict[str, Any] = {
        "image_size": model.image_size,
        "in_channels": model.in_channels,
        "crop": model.input_crop,
        "labels": model.labels,
        "cache_dir": args.cache_dir,
        "progress": args.progress,
    }
    data: ChestXrayDataset
    if args.dataset == "chexpert":
        name = f"CheXpert {split}.csv"
        # Uncertain labels score as negative, the answer key of every chexviz evaluation.
        data = CheXpertDataset(args.data, f"{split}.csv", **common)
    elif args.dataset == "mimic":
        name = f"MIMIC-CXR-JPG, split {split}"
        data = MIMICCXRDataset(args.data, split=official, **common)
    else:
        name = f"NIH ChestX-ray14, split {split}"
        data = NIHChestXray14Dataset(args.data, split=official, **common)
    result = validate_externally(
        model,
        data,
        name=name,
        replicates=args.bootstrap,
        seed=args.seed,
        device=args.device,
        progress=args.progress,
        internal=read_internal_metrics(args.model) if isinstance(args.model, Path) else None,
        min_positives=args.min_positives,
        min_negatives=args.min_negatives,
    )
    frame = result.to_frame()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out / "external_metrics.csv")
        text = json.dumps(result.to_dict(), indent=1)
        (args.out / "external_metrics.json").write_text(text + "\n", encoding="utf-8")
    print(
        f"chexviz evaluate: {name}: {result.images} images of {result.patients} patients; "
        f"AUROC with 95% intervals from {result.replicates} bootstrap replicates over patients "
        f"(each with every scored label; {result.redrawn} draws missing one were redrawn); "
        "chance (any constant score) is 0.5"
    )
    print(frame.to_string(float_format="%.3f"))
    line = result.too_few_line()
    if line is not None:
        print(line)
    unannotated = [label for label, n in zip(result.labels, result.support, strict=True) if not n]
    if unannotated:
        print(f"not scored (not annotated by {args.dataset}): {unannotated}")
    if args.dataset == "nih":
        print(f"NIH labels never compared (see chexviz.data.label_mapping): {list(NIH_UNMAPPED)}")
    if result.internal is None:
        print(
            "internal test AUROC: not in the model file (save it with extra_metadata="
            "chexviz.evaluate.external.internal_metrics_metadata(metrics))"
        )
