"""Reproduce the reference study's four-model comparison on CheXpert, with honest metrics.

The study trained DenseNet-121, MobileNet-V2, Inception-V3 and VGG-16 on 128x128 frontal
images, U-Zeros, 30,000 / 5,000 / 5,000 images sampled from train.csv, Adam lr 2e-4, batch 64,
BCE, each with a flatten -> 1024 -> dropout 0.5 head on the Keras base (``--attention`` adds its
VGG-16 attention model), and reported mean binary accuracy at 0.5. This script does the same,
but splits by patient; scores every model on the same answer key whatever ``--uncertainty`` it
trained with (uncertain labels negative, and beside it left out); reports accuracy at 0.5 and at
thresholds tuned on validation beside the all-negative and majority-class predictors, AUROC per
label, macro and over the five competition labels; and explains the model with the best
*validation* macro-AUROC. docs/guide/reproducing-the-study.md lists every departure.

Real data on a GPU:

    python examples/reproduce_study.py --data /data/chexpert --out study-out

Synthetic data at toy size (what CI runs):

    python examples/reproduce_study.py --synthetic --train 60 --val 15 --test 30 \
        --epochs 1 --image-size 80 --out study-out

Several GPUs (or CPU processes) with torchrun; rank 0 generates the synthetic data and builds
the image cache while the others wait, every rank trains, and rank 0 writes the outputs:

    torchrun --nproc_per_node=4 examples/reproduce_study.py --data /data/chexpert --sync-bn
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__" and os.environ.get("RANK", "0") == "0":
    # Said before torch loads, which takes seconds (minutes on a loaded machine).
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} reproduce_study: starting (importing torch)",
        file=sys.stderr,
        flush=True,
    )

import numpy as np
import pandas as pd
import torch

from chexviz import (
    CheXpertDataset,
    GradCAM,
    MultiLabelClassifier,
    Trainer,
    compute_metrics,
    evaluation_targets,
    make_synthetic_chexpert,
    save_study_figure,
    split_by_patient,
)
from chexviz.data.cache import default_cache_dir
from chexviz.training import distributed

STUDY_MODELS = ("densenet121", "mobilenet_v2", "inception_v3", "vgg16")
PUBLISHED_ACCURACY = {
    "vgg16": 86.42,
    "vgg16+attention": 85.39,
    "densenet121": 84.96,
    "inception_v3": 83.78,
    "mobilenet_v2": 83.24,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="CheXpert root (holds CheXpert-v1.0-small)")
    source.add_argument("--synthetic", action="store_true", help="use the synthetic data set")
    parser.add_argument("--out", type=Path, default=Path("study-out"))
    parser.add_argument("--models", nargs="+", default=list(STUDY_MODELS))
    parser.add_argument("--attention", action="store_true", help="add the study's VGG-16 attention")
    parser.add_argument(
        "--uncertainty",
        default="zeros",
        choices=("zeros", "ones", "ignore"),
        help="training policy for uncertain labels (evaluation does not depend on it)",
    )
    parser.add_argument("--train", type=int, default=30_000)
    parser.add_argument("--val", type=int, default=5_000)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument(
        "--workers", type=int, default=None, help="default: 0 on CPU, on CUDA CPUs per process - 1"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="default on CUDA: ~/.cache/chexviz/images"
    )
    parser.add_argument("--no-cache", dest="cache", action="store_false")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    started = time.perf_counter()
    args = parse_args()
    # Under torchrun: join the process group now, so that rank 0 can prepare the data while
    # the others wait (the Trainer reuses the group).
    context = distributed.detect()
    device = distributed.resolve_device(args.device, context)
    distributed.setup(context, device)
    logging.basicConfig(
        level=logging.INFO if context.is_main else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    cache_dir = args.cache_dir
    if cache_dir is None and args.cache and device.type == "cuda":
        cache_dir = default_cache_dir()  # lazy JPEG decoding cannot keep a GPU busy
    with distributed.main_process_first(context):
        args.out.mkdir(parents=True, exist_ok=True)
        if args.synthetic:
            patients = (args.train + args.val + args.test) // 2 + 10
            root = make_synthetic_chexpert(args.out / "synthetic-data", n_patients=patients)
        else:
            root = args.data
        data = CheXpertDataset(
            root,
            "train.csv",
            image_size=args.image_size,
            uncertainty=args.uncertainty,
            cache_dir=cache_dir if args.cache else None,
        )
    train, val, test = split_by_patient(data, (args.train, args.val, args.test), seed=args.seed)
    # One answer key for every model, whatever policy it trained with.
    answers = evaluation_targets(test)
    answers_excluded = evaluation_targets(test, uncertain="exclude")

    runs = [(name, name, "mlp") for name in args.models]
    if args.attention:
        runs.append(("vgg16+attention", "vgg16", "study_attention"))
    rows, models = [], {}
    for run, backbone, head in runs:
        torch.manual_seed(args.seed)
        model = MultiLabelClassifier(
            backbone, head=head, image_size=args.image_size, labels=data.labels
        )
        trainer = Trainer(
            model,
            lr=args.lr,
            batch_size=args.batch_size,
            epochs=args.epochs,
            num_workers=args.workers,
            out_dir=args.out / run,
            seed=args.seed,
            device=device,
            sync_bn=args.sync_bn,
        )
        trainer.fit(train, val)
        probs = trainer.predict(test)  # float32, on the CPU; every rank gets all predictions
        validation_auroc = trainer.evaluate(val).macro_auroc  # collective: every rank evaluates
        if not context.is_main:
            continue
        # The model lives on the trainer's device: its thresholds come to the host first.
        thresholds = model.thresholds.detach().cpu().numpy()
        metrics = compute_metrics(probs, answers, thresholds, data.labels)
        excluded = compute_metrics(probs, answers_excluded, thresholds, data.labels)
        rows.append(
            {
                "model": run,
                "published accuracy (%)": PUBLISHED_ACCURACY.get(run, np.nan),
                "accuracy @0.5 (%)": 100 * metrics.macro_binary_accuracy,
                "accuracy, tuned (%)": 100 * metrics.macro_accuracy,
                "all-negative accuracy (%)": 100 * metrics.macro_all_negative_accuracy,
                "majority-class accuracy (%)": 100 * metrics.macro_majority_accuracy,
                "macro AUROC": metrics.macro_auroc,
                "5-label AUROC": metrics.competition_auroc,
                "macro AUROC, uncertain left out": excluded.macro_auroc,
                "validation macro AUROC": validation_auroc,
                "macro F1 (tuned)": metrics.macro_f1,
                **{
                    f"AUROC {label}": value
                    for label, value in zip(data.labels, metrics.auroc, strict=True)
                },
            }
        )
        models[run] = model
        model.save(args.out / f"{run}.safetensors")

    if not context.is_main:
        return
    table = pd.DataFrame(rows).set_index("model")
    table.to_csv(args.out / "comparison.csv")
    print(table.iloc[:, :10].to_string(float_format="%.3f"))
    plot_comparison(table, args.out / "comparison.png")

    # The model to explain is chosen on validation, never on the test images it is shown on;
    # the image is the test image with the most positive labels (chosen by its labels alone).
    best = str(table["validation macro AUROC"].idxmax())
    image = test[int(np.argmax(answers.sum(axis=1)))][0]
    explanation = GradCAM(models[best]).explain(image)
    save_study_figure(explanation, args.out / f"gradcam_{best}.png")
    print(f"outputs in {args.out}; wall time {time.perf_counter() - started:.0f} s")


def plot_comparison(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(table))
    left.bar(x - 0.27, table["accuracy @0.5 (%)"], 0.27, label="accuracy @0.5")
    left.bar(x, table["all-negative accuracy (%)"], 0.27, label="all-negative predictor")
    left.bar(x + 0.27, table["majority-class accuracy (%)"], 0.27, label="majority class")
    left.set_ylabel("mean binary accuracy (%)")
    right.bar(x, table["macro AUROC"], 0.6, color="tab:green")
    right.axhline(0.5, color="grey", linestyle="--", label="chance")
    right.set_ylabel("test macro-AUROC")
    for axis in (left, right):
        axis.set_xticks(x, table.index, rotation=20)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
