"""The ``chexviz`` command line: ``demo``, ``train``, ``evaluate`` and ``explain``.

Every subcommand is a thin user of the library. Errors are reported as one line on standard
error with a non-zero exit code, never as a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chexviz._version import __version__
from chexviz.data.labels import CHEXPERT_LABELS, POLICY_NAMES, UncertaintyPolicy
from chexviz.explain.gradcam import METHODS
from chexviz.models.heads import list_heads

_EXIT_ERROR = 1
_EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``chexviz`` command.

    Args:
        argv: The arguments after the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 1 on an error, 2 on a usage error.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("chexviz: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as error:
        if args.debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"chexviz {args.command}: error: {message}", file=sys.stderr)
        return _EXIT_ERROR
    return 0


def _parser() -> argparse.ArgumentParser:
    from chexviz import demo as demo_defaults

    parser = argparse.ArgumentParser(
        prog="chexviz",
        description="Chest X-ray multi-label diagnosis on CheXpert with Grad-CAM explanations.",
    )
    parser.add_argument("--version", action="version", version=f"chexviz {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    common.add_argument("--debug", action="store_true", help="log everything; show tracebacks")
    common.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command = functools.partial(
        commands.add_parser,
        parents=[common],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    demo = add_command(
        "demo",
        help="train and explain on the built-in synthetic data set",
        description="Generate the synthetic CheXpert-format data set (cached for the next run), "
        "train a backbone on a patient split, evaluate it, explain the test images and score "
        "the heatmaps against the synthetic boxes. Writes metrics, curves, figures, an HTML "
        "report, localisation scores and the model into --out.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder")
    demo.add_argument("--backbone", default=demo_defaults.DEFAULT_BACKBONE, help="backbone name")
    demo.add_argument(
        "--images",
        type=int,
        default=demo_defaults.DEFAULT_IMAGES,
        help="about this many frontal images, split 70/10/20 by patient",
    )
    demo.add_argument(
        "--epochs", type=int, default=demo_defaults.DEFAULT_EPOCHS, help="training epochs"
    )
    demo.add_argument(
        "--image-size",
        type=int,
        default=demo_defaults.DEFAULT_IMAGE_SIZE,
        help="model input side in pixels",
    )
    demo.add_argument(
        "--lr", type=float, default=demo_defaults.DEFAULT_LR, help="Adam learning rate"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of data, split and training")
    demo.add_argument(
        "--data-dir", type=Path, default=None, help="where the synthetic data is cached"
    )
    demo.set_defaults(run=_run_demo)

    train = add_command(
        "train",
        help="train a model on a CheXpert release",
        description="Train on train.csv split by patient into train and validation sets, then "
        "evaluate on valid.csv when the release has one. Writes the model "
        "(model.safetensors), checkpoints, the history and the metrics into --out.",
    )
    train.add_argument("--data", type=Path, required=True, help="the CheXpert root folder")
    train.add_argument("--backbone", required=True, help="registered backbone name")
    train.add_argument("--out", type=Path, required=True, help="output folder")
    train.add_argument(
        "--uncertainty",
        type=_uncertainty,
        default="zeros",
        help="zeros, ones, ignore, or per label: 'Atelectasis=ones,Edema=ones' (zeros elsewhere)",
    )
    train.add_argument("--image-size", type=int, default=128, help="model input side in pixels")
    train.add_argument(
        "--in-channels", type=int, choices=(1, 3), default=1, help="greyscale or RGB input"
    )
    train.add_argument("--head", choices=list_heads(), default="linear", help="classification head")
    train.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    train.add_argument("--epochs", type=int, default=15, help="training epochs")
    train.add_argument("--batch-size", type=int, default=64, help="images per step")
    train.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    train.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of patients for validation"
    )
    train.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache")
    train.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    train.add_argument("--resume", action="store_true", help="continue from --out/last")
    train.add_argument("--seed", type=int, default=0, help="seed of the split and training")
    train.set_defaults(run=_run_train)

    evaluate = add_command(
        "evaluate",
        help="evaluate a saved model on a CheXpert CSV, or externally on MIMIC or NIH",
        description="Print per-label AUROC, accuracy, F1 and the all-negative baseline. With "
        "--dataset, validate externally instead: per-label AUROC with 95%% bootstrap intervals "
        "over patients on the labels the data set shares with the model, their mean, chance "
        "(0.5) and the model's internal test AUROC when its file carries it.",
    )
    evaluate.add_argument("--model", type=Path, required=True, help="a .safetensors model")
    evaluate.add_argument("--data", type=Path, required=True, help="the CheXpert root folder")
    evaluate.add_argument("--csv", default="valid.csv", help="CSV inside the release folder")
    evaluate.add_argument("--uncertainty", type=_uncertainty, default="zeros", help="as for train")
    evaluate.add_argument("--out", type=Path, default=None, help="also write metrics.csv here")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    _add_external_arguments(evaluate)
    evaluate.set_defaults(run=_run_evaluate)

    explain = add_command(
        "explain",
        help="explain images with Grad-CAM",
        description="Write a study-style figure per image and one HTML report for all images.",
    )
    explain.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files")
    explain.add_argument("--model", type=Path, required=True, help="a .safetensors model")
    explain.add_argument("--out", type=Path, required=True, help="output folder")
    explain.add_argument(
        "--classes",
        type=_classes,
        default=None,
        help="comma-separated label names to explain (default: the predicted positives)",
    )
    explain.add_argument(
        "--method",
        choices=METHODS,
        default="gradcam",
        help="the CAM method",
    )
    explain.set_defaults(run=_run_explain)
    return parser


def _uncertainty(text: str) -> UncertaintyPolicy:
    if text in POLICY_NAMES:
        return text
    policy: dict[str, str] = {}
    for item in text.split(","):
        label, sep, value = item.partition("=")
        if not sep or label.strip() not in CHEXPERT_LABELS or value.strip() not in POLICY_NAMES:
            raise argparse.ArgumentTypeError(
                f"bad policy {item!r}: use {', '.join(POLICY_NAMES)} or LABEL=POLICY,... "
                f"with LABEL one of {', '.join(CHEXPERT_LABELS)}"
            )
        policy[label.strip()] = value.strip()
    return policy  # type: ignore[return-value]


def _classes(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _run_demo(args: argparse.Namespace) -> None:
    from chexviz.demo import run_demo

    result = run_demo(
        args.out,
        backbone=args.backbone,
        images=args.images,
        epochs=args.epochs,
        image_size=args.image_size,
        lr=args.lr,
        seed=args.seed,
        data_dir=args.data_dir,
        progress=args.progress,
    )
    print(
        f"chexviz demo: {result.images} synthetic frontal images, {args.backbone}, "
        f"{args.epochs} epochs, {result.seconds:.0f} s"
    )
    print(f"  test macro-AUROC, drawn signs   {result.sign_macro_auroc:.3f}")
    print(f"  test macro-AUROC, all labels    {result.macro_auroc:.3f}")
    print(
        f"  test macro-accuracy             {result.macro_accuracy:.3f} "
        f"(all-negative predictor: {result.all_negative_accuracy:.3f})"
    )
    print(
        f"  Grad-CAM pointing game          {result.pointing_game:.3f} "
        f"(random point: {result.pointing_chance:.3f})"
    )
    print(f"  report: {result.report}")


def _run_train(args: argparse.Namespace) -> None:
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.data.splits import split_by_patient
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.training.trainer import Trainer

    def dataset(csv: str) -> CheXpertDataset:
        return CheXpertDataset(
            args.data,
            csv,
            image_size=args.image_size,
            in_channels=args.in_channels,
            uncertainty=args.uncertainty,
            cache_dir=args.cache_dir,
            progress=args.progress,
        )

    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    full = dataset("train.csv")
    train, val = split_by_patient(full, (1 - args.val_fraction, args.val_fraction), seed=args.seed)
    model = MultiLabelClassifier(
        args.backbone,
        in_channels=args.in_channels,
        pretrained=args.pretrained,
        head=args.head,
        image_size=args.image_size,
        labels=full.labels,
    )
    trainer = Trainer(
        model,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        device=args.device,
        num_workers=args.workers,
        out_dir=args.out,
        seed=args.seed,
        progress=args.progress,
    )
    history = trainer.fit(train, val, resume=args.resume)
    history.to_csv(args.out / "history.csv")
    history.to_json(args.out / "history.json")
    model.save(args.out / "model.safetensors")
    print(f"model: {args.out / 'model.safetensors'}")
    try:
        valid = dataset("valid.csv")
    except FileNotFoundError:
        return
    metrics = trainer.evaluate(valid)
    metrics.to_frame().to_csv(args.out / "metrics.csv")
    print(metrics.to_frame().to_string(float_format="%.3f"))


def _run_evaluate(args: argparse.Namespace) -> None:
    if args.dataset is not None:
        _run_external(args)
        return
    if args.split is not None:
        raise ValueError("--split needs --dataset (for a CheXpert CSV, use --csv)")
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.training.trainer import Trainer

    model = MultiLabelClassifier.load(args.model)
    data = CheXpertDataset(
        args.data,
        args.csv,
        image_size=model.image_size,
        in_channels=model.in_channels,
        uncertainty=args.uncertainty,
        labels=model.labels,
        progress=args.progress,
    )
    metrics = Trainer(model, device=args.device, progress=args.progress).evaluate(data)
    frame = metrics.to_frame()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out / "metrics.csv")
    print(frame.to_string(float_format="%.3f"))


_EXTERNAL_SPLITS = {
    "chexpert": ("valid", ("train", "valid")),
    "mimic": ("test", ("train", "validate", "test", "all")),
    "nih": ("test", ("train_val", "test", "all")),
}


def _add_external_arguments(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument(
        "--dataset",
        choices=list(_EXTERNAL_SPLITS),
        default=None,
        help="validate on this data set's layout (--data is its folder) with bootstrap CIs",
    )
    evaluate.add_argument(
        "--split",
        default=None,
        help="with --dataset, the official split: chexpert valid|train (default valid); mimic "
        "train|validate|test|all (default test); nih train_val|test|all (default test)",
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
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.training.external import read_internal_metrics, validate_externally

    default, splits = _EXTERNAL_SPLITS[args.dataset]
    split = args.split or default
    if split not in splits:
        raise ValueError(f"--split for {args.dataset} must be one of {list(splits)}, got {split!r}")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be at least 0, got {args.bootstrap}")
    official: Any = None if split == "all" else split  # checked against the choices above
    model = MultiLabelClassifier.load(args.model)
    common: dict[str, Any] = {
        "image_size": model.image_size,
        "in_channels": model.in_channels,
        "labels": model.labels,
        "cache_dir": args.cache_dir,
        "progress": args.progress,
    }
    data: ChestXrayDataset
    if args.dataset == "chexpert":
        name = f"CheXpert {split}.csv"
        data = CheXpertDataset(args.data, f"{split}.csv", uncertainty=args.uncertainty, **common)
    elif args.dataset == "mimic":
        name = f"MIMIC-CXR-JPG, split {split}"
        data = MIMICCXRDataset(
            args.data,
            split=official,
            uncertainty=args.uncertainty,
            **common,
        )
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
        internal=read_internal_metrics(args.model),
    )
    frame = result.to_frame()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out / "external_metrics.csv")
        text = json.dumps(result.to_dict(), indent=1)
        (args.out / "external_metrics.json").write_text(text + "\n", encoding="utf-8")
    print(
        f"chexviz evaluate: {name}: {result.images} images of {result.patients} patients; "
        f"AUROC with 95% intervals from {args.bootstrap} bootstrap replicates over patients; "
        "chance (any constant score) is 0.5"
    )
    print(frame.to_string(float_format="%.3f"))
    unscored = [label for label, ok in zip(result.labels, result.scored, strict=True) if not ok]
    if unscored:
        print(f"not scored (not annotated by {args.dataset}, or one class only): {unscored}")
    if args.dataset == "nih":
        print(f"NIH labels never compared (see chexviz.data.label_mapping): {list(NIH_UNMAPPED)}")
    if result.internal is None:
        print(
            "internal test AUROC: not in the model file (save it with extra_metadata="
            "chexviz.training.external.internal_metrics_metadata(metrics))"
        )


def _run_explain(args: argparse.Namespace) -> None:
    from chexviz.explain.gradcam import GradCAM
    from chexviz.explain.report import save_study_figure, write_html_report
    from chexviz.models.classifier import MultiLabelClassifier

    model = MultiLabelClassifier.load(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    cam = GradCAM(model, method=args.method)
    explanation = cam.explain([str(path) for path in args.images], classes=args.classes)
    for index, path in enumerate(args.images):
        save_study_figure(explanation, args.out / f"{index:03d}_{path.stem}.png", index=index)
    report = write_html_report(explanation, args.out / "report.html", names=args.images)
    print(f"report: {report}")


if __name__ == "__main__":
    sys.exit(main())
