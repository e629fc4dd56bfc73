"""The synthetic CheXpert set: drawing speed, box sizes, and whether a small CNN can learn it.

Three measurements on a set written by ``make_synthetic_chexpert``:

1. **Speed**: images per minute for ``--patients`` train patients (plus a tenth as many
   validation patients), drawn on one thread (``workers=1``) and on two (``workers=2``),
   each into a fresh folder.
2. **Boxes**: per drawn sign, the mean fraction of the image its boxes cover, which is the hit
   rate of a uniformly random point in the pointing game (the chance level).
3. **Learnability** (skip with ``--no-learn``): ``simple_cnn`` trained with chexviz's
   ``Trainer`` on the frontal images of ``--learn-patients`` patients at ``--size`` px for
   ``--epochs`` epochs on the CPU (70/10/20 split by patient), then macro-AUROC over
   ``SIGN_LABELS`` and the Grad-CAM pointing game on the test patients, every boxed finding
   explained (``classes="true"``).

Run with ``OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chexviz.data.boxes import load_boxes
from chexviz.data.synthetic import SIGN_LABELS, make_synthetic_chexpert

logger = logging.getLogger("bench_synthetic")


def speed(work: Path, patients: int) -> pd.DataFrame:
    rows = []
    for workers in (1, 2):
        started = time.perf_counter()
        release = make_synthetic_chexpert(
            work / f"speed-{workers}",
            n_patients=patients,
            valid_patients=patients // 10,
            workers=workers,
        )
        seconds = time.perf_counter() - started
        images = sum(1 for _ in release.rglob("*.jpg"))
        rows.append(
            {
                "workers": workers,
                "images": images,
                "seconds": round(seconds, 1),
                "images/minute": round(60 * images / seconds),
            }
        )
    return pd.DataFrame(rows)


def box_sizes(release: Path) -> pd.DataFrame:
    boxes = pd.concat(
        [load_boxes(release / "train_boxes.csv"), load_boxes(release / "valid_boxes.csv")]
    )
    boxes["area"] = (boxes.x1 - boxes.x0) * (boxes.y1 - boxes.y0) / (boxes.width * boxes.height)
    # The boxes of one finding barely overlap, so their summed area is the union's.
    findings = boxes.groupby(["Path", "label"], sort=False).agg(
        boxes=("area", "size"), area=("area", "sum")
    )
    table = findings.groupby(level="label").agg(
        findings=("area", "size"),
        boxes_per_finding=("boxes", "mean"),
        mean_area=("area", "mean"),
        max_area=("area", "max"),
    )
    table = table.reindex(list(SIGN_LABELS))
    table.loc["all findings"] = [
        len(findings),
        findings["boxes"].mean(),
        findings["area"].mean(),
        findings["area"].max(),
    ]
    return table.round(3)


def learnability(
    work: Path, patients: int, size: int, epochs: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.data.splits import split_by_patient
    from chexviz.evaluate.localization import (
        anatomical_prior,
        score_localization,
        select_boxes,
        summarize_localization,
    )
    from chexviz.explain.gradcam import GradCAM
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.training.trainer import Trainer

    release = make_synthetic_chexpert(work / "learn", n_patients=patients, valid_patients=0)
    data = CheXpertDataset(
        release.parent,
        image_size=size,
        labels=SIGN_LABELS,
        cache_dir=work / "cache",
        progress=False,
    )
    train, val, test = split_by_patient(data, (0.7, 0.1, 0.2), seed=0)
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", labels=SIGN_LABELS, image_size=size)
    trainer = Trainer(
        model, lr=2e-3, batch_size=32, epochs=epochs, device="cpu", progress=False, seed=0
    )
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(train, val)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = trainer.evaluate(test)
    model.eval()
    boxes = load_boxes(release / "train_boxes.csv")
    scores = score_localization(
        GradCAM(model),
        test,
        boxes,
        classes="true",
        progress=False,
        prior=anatomical_prior(select_boxes(boxes, train), size),  # from the training split
    )
    table = summarize_localization(scores)
    table.insert(0, "auroc", pd.Series(dict(zip(SIGN_LABELS, metrics.auroc, strict=True))))
    summary = {
        "train_images": len(train),
        "test_images": len(test),
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "macro_auroc": round(float(np.nanmean(metrics.auroc)), 3),
        "pointing_overall": round(float(table.loc["overall", "hit_rate"]), 3),
        "pointing_chance": round(float(table.loc["overall", "chance"]), 3),
        "pointing_prior": round(float(table.loc["overall", "prior_hit_rate"]), 3),
        "pointing_label_mean": round(float(table.drop(index="overall")["hit_rate"].mean()), 3),
        "prior_label_mean": round(float(table.drop(index="overall")["prior_hit_rate"].mean()), 3),
    }
    return table.round(3), summary


def markdown(frame: pd.DataFrame, index: bool = True) -> str:
    table = frame.reset_index() if index else frame
    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200, help="patients for the speed test")
    parser.add_argument("--learn-patients", type=int, default=300)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--no-learn", action="store_true")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-synthetic-"))
    print(
        f"# bench_synthetic on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("\n## Speed\n")
    print(markdown(speed(work, args.patients), index=False))
    print("\n## Box sizes (chance level of the pointing game)\n")
    print(markdown(box_sizes(work / "speed-1" / "CheXpert-v1.0-small")))
    if not args.no_learn:
        table, summary = learnability(work, args.learn_patients, args.size, args.epochs)
        print(f"\n## Learnability: simple_cnn, {args.size} px, {args.epochs} epochs\n")
        print(markdown(table))
        print()
        for key, value in summary.items():
            print(f"- {key}: {value}")


if __name__ == "__main__":
    main()
