"""The ``chexviz`` command line: ``demo``, ``train``, ``evaluate``, ``explain`` and ``localize``.

Every subcommand is a thin user of the library. Errors are reported as one line on standard
error with a non-zero exit code, never as a traceback (``--debug`` shows it).

The parser imports no torch, so that ``--help`` and ``--version`` answer at once: each command
imports what it needs when it runs, and the parser's choices and defaults are constants here
(``tests/test_cli.py`` checks them against the library's).

Progress goes to standard error: a "starting" line as soon as the arguments are read, then the
library's progress lines (``chexviz._internal.progress``: stages, epochs, generated patients),
between the bars on a terminal and timestamped elsewhere. ``--quiet`` drops all of it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexviz._internal.progress import PROGRESS_LOGGER
from chexviz._version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from chexviz.data.dataset import CheXpertDataset
    from chexviz.data.labels import UncertaintyPolicy
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.training.metrics import EvaluationPolicy, Metrics
    from chexviz.training.trainer import Trainer

_EXIT_ERROR = 1
_EXIT_USAGE = 2
# The commands that run for minutes and so say "starting" at once; the others answer in
# seconds with their results or a one-line error.
_LONG_COMMANDS = ("demo", "train")

# The parser's choices and defaults, kept here so that building it imports no torch; each has
# its home in the library (named beside it) and tests/test_cli.py checks that they agree.
# chexviz.explain.METHODS
_CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam")
_HEADS = ("attention_pool", "linear", "mlp", "study_attention")  # chexviz.models.list_heads()
_DEMO_BACKBONE = "simple_cnn"  # chexviz.demo.DEFAULT_BACKBONE
_DEMO_IMAGES = 1800  # chexviz.demo.DEFAULT_IMAGES
_DEMO_EPOCHS = 20  # chexviz.demo.DEFAULT_EPOCHS
_DEMO_IMAGE_SIZE = 96  # chexviz.demo.DEFAULT_IMAGE_SIZE
_DEMO_LR = 1e-3  # chexviz.demo.DEFAULT_LR


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` only where it tells the user something.

    Not for on/off flags (``--no-progress`` would read "default: True"), not for options whose
    default is "none given" (their help says what happens then), and not twice for a help line
    that states its default itself.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or "default" in text:
            return text
        return super()._get_help_string(action)


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
    if args.quiet:
        args.progress = False
    elif args.command in _LONG_COMMANDS and os.environ.get("RANK", "0") == "0":
        # Before the command imports torch, which takes seconds on a loaded machine; under
        # torchrun rank 0 speaks for all.
        print(
            _progress_prefix(args.command) + "starting (importing torch and the models)",
            file=sys.stderr,
            flush=True,
        )
    try:
        with _progress_lines(args.command, shown=not args.quiet):
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


def _progress_prefix(command: str) -> str:
    """The start of a progress line: the command, after a timestamp unless on a terminal."""
    stamp = "" if sys.stderr.isatty() else time.strftime("%Y-%m-%d %H:%M:%S ")
    return f"{stamp}chexviz {command} "


class _ProgressLines(logging.Handler):
    """Prints the library's progress lines on standard error, as the command's own lines.

    On a terminal through ``tqdm.write``, so that they land above the bars and stay after each
    bar closes; elsewhere one timestamped line each, flushed at once (a pipe or a log shows it
    when it happens).
    """

    def __init__(self, command: str) -> None:
        super().__init__(logging.INFO)
        self.command = command

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _progress_prefix(self.command) + record.getMessage()
            if sys.stderr.isatty():
                from tqdm.auto import tqdm

                tqdm.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr, flush=True)
        except Exception:  # a logging handler must not raise (logging's own rule)
            self.handleError(record)


@contextlib.contextmanager
def _progress_lines(command: str, *, shown: bool) -> Iterator[None]:
    """Prints the ``chexviz.progress`` lines on standard error while the command runs.

    Hidden (``shown=False``, for ``--quiet``) they are dropped, even with ``--verbose``. The
    logger is left as it was found, for the next caller in this process.
    """
    progress = logging.getLogger(PROGRESS_LOGGER)
    before = progress.level, progress.propagate
    handler = _ProgressLines(command)
    if shown:
        progress.addHandler(handler)
    # Not passed on to the root logger: with --verbose its handler would print each line twice.
    progress.propagate = False
    progress.setLevel(logging.INFO if shown else logging.WARNING)
    try:
        yield
    finally:
        progress.removeHandler(handler)
        progress.setLevel(before[0])
        progress.propagate = before[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chexviz",
        description="Chest X-ray multi-label diagnosis on CheXpert with Grad-CAM explanations.",
    )
    parser.add_argument("--version", action="version", version=f"chexviz {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="log what each step does (INFO messages)"
    )
    common.add_argument(
        "--debug", action="store_true", help="log everything and show the traceback of an error"
    )
    common.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="hide the progress bars (they only ever show on a terminal); the progress lines stay",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print no progress: no starting, stage or epoch lines, no bars (results, warnings "
        "and errors still print)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command = functools.partial(
        commands.add_parser, parents=[common], formatter_class=_HelpFormatter
    )

    demo = add_command(
        "demo",
        help="train and explain on the built-in synthetic data set",
        description="Generate the synthetic CheXpert-format data set (cached for the next run), "
        "train a backbone on a patient split, evaluate it, explain the test images and score "
        "the heatmaps against the synthetic boxes. Prints each figure beside its strongest "
        "trivial baseline and writes metrics, curves, figures, an HTML report, localisation "
        "scores, summary.json and the model into --out.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("demo-out"),
        help="folder for the outputs (created if missing)",
    )
    demo.add_argument(
        "--backbone",
        default=_DEMO_BACKBONE,
        help="registered backbone to train (chexviz.list_backbones(): simple_cnn, resnet18, "
        "densenet121, vgg16, ...)",
    )
    demo.add_argument(
        "--images",
        type=int,
        default=_DEMO_IMAGES,
        help="about this many frontal images, split 70/10/20 by patient",
    )
    demo.add_argument(
        "--epochs",
        type=int,
        default=_DEMO_EPOCHS,
        help="training epochs (the best validation epoch is kept)",
    )
    demo.add_argument(
        "--image-size",
        type=int,
        default=_DEMO_IMAGE_SIZE,
        help="side of the square model input, in pixels",
    )
    demo.add_argument("--lr", type=float, default=_DEMO_LR, help="Adam learning rate")
    demo.add_argument(
        "--seed", type=int, default=0, help="seed of the data set, the split and training"
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the synthetic data and its image cache are kept between runs "
        "(default: $CHEXVIZ_DATA, else ~/.cache/chexviz)",
    )
    demo.set_defaults(run=_run_demo)

    train = add_command(
        "train",
        help="train a model on a CheXpert release",
        description="Train on train.csv split by patient into train and validation sets, then "
        "evaluate on valid.csv when the release has one. Writes the model "
        "(model.safetensors), checkpoints, the history and the metrics into --out. "
        "--uncertainty only changes what the model trains on: validation and evaluation "
        "always score uncertain labels as negative (and, beside it, left out).",
    )
    train.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the folder holding CheXpert-v1.0-small (or that folder itself)",
    )
    train.add_argument(
        "--backbone",
        required=True,
        help="registered backbone (chexviz.list_backbones(): densenet121, mobilenet_v2, "
        "inception_v3, vgg16, resnet18, simple_cnn, ...)",
    )
    train.add_argument(
        "--out", type=Path, required=True, help="folder for the model, checkpoints and metrics"
    )
    train.add_argument(
        "--uncertainty",
        type=_uncertainty,
        # None, not "zeros": argparse would parse a text default, importing the labels (and
        # torch) for every run, before the starting line.
        default=None,
        help="what uncertain (-1) labels become for training: zeros, ones, ignore, or per "
        "label such as 'Atelectasis=ones,Edema=ones' (zeros elsewhere) (default: zeros)",
    )
    train.add_argument(
        "--image-size", type=int, default=128, help="side of the square model input, in pixels"
    )
    train.add_argument(
        "--in-channels",
        type=int,
        choices=(1, 3),
        default=1,
        help="1 for greyscale input, 3 to copy the grey image into RGB",
    )
    train.add_argument(
        "--head",
        choices=_HEADS,
        default="linear",
        help="classification head: linear (pooling + one layer), mlp (the reference study's "
        "flatten head), study_attention (the study's attention model), attention_pool",
    )
    train.add_argument(
        "--pretrained",
        action="store_true",
        help="start from torchvision's ImageNet weights (downloaded on first use)",
    )
    train.add_argument(
        "--epochs", type=int, default=15, help="training epochs (the best validation one is kept)"
    )
    train.add_argument(
        "--batch-size", type=int, default=64, help="images per optimizer step, over all processes"
    )
    train.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    train.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of train.csv's patients held out to pick the epoch and tune thresholds",
    )
    train.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="folder for the decoded-image cache (on CUDA by default "
        "$XDG_CACHE_HOME/chexviz/images; on CPU none, so images are decoded every epoch)",
    )
    train.add_argument(
        "--no-cache", dest="cache", action="store_false", help="decode every image on each read"
    )
    train.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: 0 on CPU; on CUDA the CPUs per process "
        "less one, at most 8)",
    )
    train.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ..."
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from --out/last.safetensors",
    )
    train.add_argument(
        "--seed", type=int, default=0, help="seed of the split, the data order and the weights"
    )
    train.set_defaults(run=_run_train)

    evaluate = add_command(
        "evaluate",
        help="evaluate a saved model on a CheXpert CSV, or externally on MIMIC or NIH",
        description="Print per-label AUROC, accuracy at 0.5 and at the model's thresholds, F1, "
        "and the all-negative and majority-class baselines, twice: with uncertain labels "
        "counted as negative (the reference study's choice), then with them left out. The "
        "answers are the CSV's own cells, whatever policy the model was trained with. With "
        "--dataset, validate externally instead: per-label AUROC with 95% bootstrap intervals "
        "over patients on the labels the data set shares with the model, their mean, chance "
        "(0.5) and the model's internal test AUROC when its file carries it.",
    )
    evaluate.add_argument("--model", type=_model_spec, required=True, help=_MODEL_HELP)
    evaluate.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the folder holding CheXpert-v1.0-small (or that folder itself); with --dataset, "
        "that data set's root folder",
    )
    evaluate.add_argument(
        "--csv", default="valid.csv", help="the CSV to score, inside the release folder"
    )
    evaluate.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write metrics.csv and metrics_uncertain_excluded.csv into this folder",
    )
    evaluate.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ..."
    )
    _add_external_arguments(evaluate)
    _add_minimum_arguments(
        evaluate, "patients with a positive image", "patients with a negative image"
    )
    evaluate.set_defaults(run=_run_evaluate)

    explain = add_command(
        "explain",
        help="explain images with Grad-CAM",
        description="Write a study-style figure per image and one HTML report for all images.",
    )
    explain.add_argument(
        "images", type=Path, nargs="+", metavar="IMAGE", help="X-ray image files (JPEG, PNG)"
    )
    explain.add_argument("--model", type=_model_spec, required=True, help=_MODEL_HELP)
    explain.add_argument(
        "--out", type=Path, required=True, help="folder for the figures and report.html"
    )
    explain.add_argument(
        "--classes",
        type=_classes,
        default=None,
        help="comma-separated label names to explain (default: each image's predicted "
        "positives, at the model's thresholds)",
    )
    explain.add_argument(
        "--method",
        choices=_CAM_METHODS,
        default="gradcam",
        help="how gradients become a map (see the explanations guide)",
    )
    explain.set_defaults(run=_run_explain)

    localize = add_command(
        "localize",
        help="score Grad-CAM against radiologists' segmentations (CheXlocalize)",
        description="Explain every X-ray of a CheXpert CSV and score the heatmaps with the "
        "CheXlocalize protocol (mIoU and hit rate with bootstrap intervals, beside chance and "
        "an anatomical prior). Writes the tables, localization.png and overlays into --out. "
        "With --nih-boxes instead of --ground-truth, score against NIH ChestX-ray14's boxes "
        "(pointing game, IoU and energy beside chance and a cross-fitted anatomical prior).",
    )
    localize.add_argument("--model", type=_model_spec, required=True, help=_MODEL_HELP)
    localize.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder holding CheXpert-v1.0 (full resolution); with --nih-boxes, the NIH folder",
    )
    localize.add_argument("--csv", default="valid.csv", help="CSV of the X-rays (valid or test)")
    truth = localize.add_mutually_exclusive_group(required=True)
    truth.add_argument(
        "--ground-truth", type=Path, help="gt_segmentations_*.json or gt_annotations_*.json"
    )
    truth.add_argument(
        "--nih-boxes", type=Path, help="NIH ChestX-ray14's BBox_List_2017.csv (scores its images)"
    )
    localize.add_argument(
        "--nih-image-size",
        type=int,
        default=1024,
        help="with --nih-boxes, the side of the images the boxes were drawn on: the release's "
        "1024-pixel PNGs, also for a downsampled copy (each box is scaled to its image's own "
        "size, read from the file)",
    )
    localize.add_argument("--out", type=Path, required=True, help="output folder")
    localize.add_argument(
        "--thresholds", type=Path, default=None, help="tuning_results.csv (default: Otsu)"
    )
    localize.add_argument(
        "--cutoffs", type=Path, default=None, help="probability_tuning_results.csv"
    )
    localize.add_argument(
        "--full-set", action="store_true", help="IoU on the full set, not the true-positive slice"
    )
    localize.add_argument("--tune", action="store_true", help="also tune thresholds on this set")
    localize.add_argument(
        "--save-segmentations",
        action="store_true",
        help="also write saliency_segmentations.json (for the reference eval.py)",
    )
    localize.add_argument("--overlays", type=int, default=20, help="overlay figures to write")
    localize.add_argument(
        "--method", choices=_CAM_METHODS, default="gradcam", help="the CAM method"
    )
    localize.add_argument(
        "--methods",
        type=_methods,
        default=None,
        help="compare these comma-separated methods on the same X-rays (e.g. "
        "gradcam,gradcam++,layercam,eigencam,ig): writes comparison.csv, comparison.png and "
        "one folder of tables per method",
    )
    localize.add_argument(
        "--validation-csv",
        default=None,
        help="with --methods: CSV of the validation X-rays, to tune each method's thresholds "
        "on (default: Otsu for every method)",
    )
    localize.add_argument(
        "--validation-ground-truth",
        type=Path,
        default=None,
        help="with --validation-csv: the validation set's gt_segmentations_val.json",
    )
    localize.add_argument(
        "--human-benchmark",
        type=Path,
        default=None,
        help="with --methods: hb_segmentations_test.json, the human benchmark of the same "
        "X-rays; adds its rows and each method's percentage decrease from it",
    )
    localize.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    localize.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    _add_minimum_arguments(localize, "scored cases (X-rays or boxed findings)", None)
    localize.set_defaults(run=_run_localize)
    return parser


def _add_minimum_arguments(
    parser: argparse.ArgumentParser, positives: str, negatives: str | None
) -> None:
    """The "too few cases" rule's options (one rule: ``chexviz._internal.cases``)."""
    from chexviz._internal.cases import DEFAULT_MIN_NEGATIVES, DEFAULT_MIN_POSITIVES

    parser.add_argument(
        "--min-positives",
        type=int,
        default=DEFAULT_MIN_POSITIVES,
        help=f"fewest {positives} a label needs to be scored; below it the label is reported "
        "as too few cases, with its counts, and left out of the mean",
    )
    if negatives is not None:
        parser.add_argument(
            "--min-negatives",
            type=int,
            default=DEFAULT_MIN_NEGATIVES,
            help=f"fewest {negatives} a label needs to be scored",
        )


def _uncertainty(text: str) -> UncertaintyPolicy:
    from chexviz.data.labels import CHEXPERT_LABELS, POLICY_NAMES

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
    from chexviz.demo import format_summary, run_demo

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
    print(format_summary(result, backbone=args.backbone, epochs=args.epochs))


def _run_train(args: argparse.Namespace) -> None:
    from chexviz.data.cache import default_cache_dir
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.data.splits import split_by_patient
    from chexviz.evaluate.external import internal_metrics_metadata
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.training.distributed import resolve_device
    from chexviz.training.trainer import Trainer

    device = resolve_device(args.device)
    if not args.cache:
        args.cache_dir = None
    elif args.cache_dir is None and device.type == "cuda":
        # Decoding JPEGs on every read cannot keep a GPU busy; the memory-mapped cache can.
        args.cache_dir = default_cache_dir()

    def dataset(csv: str) -> CheXpertDataset:
        return CheXpertDataset(
            args.data,
            csv,
            image_size=args.image_size,
            in_channels=args.in_channels,
            uncertainty=args.uncertainty or "zeros",
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
        device=device,
        num_workers=args.workers,
        out_dir=args.out,
        seed=args.seed,
        progress=args.progress,
    )
    history = trainer.fit(train, val, resume=args.resume)
    main = trainer.context.is_main  # under torchrun only rank 0 writes and prints
    try:
        valid: CheXpertDataset | None = dataset("valid.csv")
    except FileNotFoundError:
        valid = None
    # valid.csv is the model's internal test set: its metrics travel in the weight file, where
    # `chexviz evaluate --dataset` shows them beside an external data set's.
    internal = (
        _print_metrics(trainer, valid, args.out if main else None, quiet=not main)
        if valid is not None
        else None
    )
    if main:
        history.to_csv(args.out / "history.csv")
        history.to_json(args.out / "history.json")
        extra = internal_metrics_metadata(internal) if internal is not None else None
        model.save(args.out / "model.safetensors", extra_metadata=extra)
        print(f"model: {args.out / 'model.safetensors'}")


_MODEL_HELP = (
    "a model written by chexviz train or demo (.safetensors), or xrv:<weights name> for a "
    "torchxrayvision model in its cache (e.g. xrv:densenet121-res224-chex)"
)


def _methods(text: str) -> list[str]:
    from chexviz.explain.methods import MAP_METHODS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MAP_METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown or [text]}; known methods: {', '.join(MAP_METHODS)}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a method is listed twice in {text!r}")
    return names


def _model_spec(text: str) -> str | Path:
    """Parses ``--model``: ``xrv:<weights name>`` stays a string, anything else is a path."""
    from chexviz.models.xrv import XRV_SPEC_PREFIX

    if text.startswith(XRV_SPEC_PREFIX):
        if not text[len(XRV_SPEC_PREFIX) :]:
            raise argparse.ArgumentTypeError(
                "xrv: needs a weights name, e.g. xrv:densenet121-res224-chex"
            )
        return text
    return Path(text)


def _load_model(spec: str | Path) -> MultiLabelClassifier:
    """The model ``--model`` names (see ``_model_spec``), in eval mode."""
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.models.xrv import from_torchxrayvision

    if isinstance(spec, str):
        return from_torchxrayvision(spec)
    return MultiLabelClassifier.load(spec)


def _run_evaluate(args: argparse.Namespace) -> None:
    if args.dataset is not None:
        _run_external(args)
        return
    if args.split is not None:
        raise ValueError("--split needs --dataset (for a CheXpert CSV, use --csv)")
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.training.trainer import Trainer

    model = _load_model(args.model)
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
    _print_metrics(
        trainer, data, args.out, min_positives=args.min_positives, min_negatives=args.min_negatives
    )


def _print_metrics(
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

    default, splits = _EXTERNAL_SPLITS[args.dataset]
    split = args.split or default
    if split not in splits:
        raise ValueError(f"--split for {args.dataset} must be one of {list(splits)}, got {split!r}")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be at least 0, got {args.bootstrap}")
    official: Any = None if split == "all" else split  # checked against the choices above
    model = _load_model(args.model)
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


def _run_explain(args: argparse.Namespace) -> None:
    from chexviz.explain.gradcam import GradCAM
    from chexviz.explain.report import save_study_figure, write_html_report

    model = _load_model(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    cam = GradCAM(model, method=args.method)
    explanation = cam.explain([str(path) for path in args.images], classes=args.classes)
    for index, path in enumerate(args.images):
        save_study_figure(explanation, args.out / f"{index:03d}_{path.stem}.png", index=index)
    report = write_html_report(explanation, args.out / "report.html", names=args.images)
    print(f"report: {report}")


def _run_localize(args: argparse.Namespace) -> None:
    if args.nih_boxes is not None:
        _run_localize_nih(args)
        return
    if args.methods is not None:
        _run_localize_methods(args)
        return
    for option in ("validation_csv", "validation_ground_truth", "human_benchmark"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option.replace('_', '-')} goes with --methods")
    from chexviz._internal.cases import TOO_FEW, too_few_line
    from chexviz.data.chexlocalize import read_chexlocalize
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.evaluate.chexlocalize import read_tuning_csv, run_chexlocalize
    from chexviz.explain.gradcam import GradCAM

    ground_truth = read_chexlocalize(args.ground_truth)
    thresholds = read_tuning_csv(args.thresholds) if args.thresholds else None
    cutoffs = read_tuning_csv(args.cutoffs) if args.cutoffs else None
    model = _load_model(args.model)
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
    line = too_few_line(
        [str(label) for label in labels.index],
        [
            f"{row.positives} X-rays with a finding of {row.patients} patients, "
            f"{row.miou_n} with a defined IoU"
            for row in labels.itertuples()
        ],
        (labels["status"] != TOO_FEW).to_numpy(),
        min_positives=args.min_positives,
        min_negatives=None,
    )
    if line is not None:
        print(line)
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
    model = _load_model(args.model)
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
    from chexviz._internal.cases import TOO_FEW, too_few_line
    from chexviz.data.nih import NIHChestXray14Dataset, read_nih_boxes
    from chexviz.evaluate.localization import (
        score_localization_cross_fitted,
        summarize_localization,
        unscored_boxes,
    )
    from chexviz.explain.gradcam import GradCAM

    model = _load_model(args.model)
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
    line = too_few_line(
        [str(label) for label in labels.index],
        [
            f"{row.explained} explained of {row.findings} boxed findings"
            for row in labels.itertuples()
        ],
        (labels["status"] != TOO_FEW).to_numpy(),
        min_positives=args.min_positives,
        min_negatives=None,
    )
    if line is not None:
        print(line)
    print(f"tables: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
