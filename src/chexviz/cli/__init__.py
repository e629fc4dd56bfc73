"""The ``chexviz`` command line: ``demo``, ``train``, ``evaluate``, ``explain`` and ``localize``.

Every subcommand is a thin user of the library. Errors are reported as one line on standard
error with a non-zero exit code, never as a traceback (``--debug`` shows it).

The parser imports no torch, so that ``--help`` and ``--version`` answer at once: each command
imports what it needs when it runs, and the parser's choices and defaults are constants here
(``tests/test_cli.py`` checks them against the library's).

Progress goes to standard error: a "starting" line as soon as the arguments are read, then the
library's progress lines (``chexviz._internal.progress``: stages, epochs, generated patients),
between the bars on a terminal and timestamped elsewhere. ``--quiet`` drops all of it.

This package holds ``main`` and the parser; each command runs in a submodule of its own
(``train`` for ``demo`` and ``train``, ``evaluate``, ``explain``, ``localize``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chexviz._version import __version__
from chexviz.cli._progress import progress_lines, progress_prefix
from chexviz.cli.evaluate import add_external_arguments, run_evaluate
from chexviz.cli.explain import run_explain
from chexviz.cli.localize import run_localize
from chexviz.cli.train import run_demo, run_train

if TYPE_CHECKING:
    from chexviz.data.labels import UncertaintyPolicy

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
            progress_prefix(args.command) + "starting (importing torch and the models)",
            file=sys.stderr,
            flush=True,
        )
    try:
        with progress_lines(args.command, shown=not args.quiet):
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
    demo.set_defaults(run=run_demo)

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
    train.set_defaults(run=run_train)

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
    add_external_arguments(evaluate)
    _add_minimum_arguments(
        evaluate, "patients with a positive image", "patients with a negative image"
    )
    evaluate.set_defaults(run=run_evaluate)

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
    explain.set_defaults(run=run_explain)

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
    localize.set_defaults(run=run_localize)
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
