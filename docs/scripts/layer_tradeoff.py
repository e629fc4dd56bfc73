"""Localisation against the synthetic boxes for each target layer of the demo's model.

Scores Grad-CAM at each block of ``simple_cnn`` and with blocks fused (LayerCAM-style) on the
demo's test patients, beside a random point and the anatomical prior (the mean of the training
split's boxes per label, which does not depend on the layer). Prints a Markdown table for the
explanations guide. It reuses the model of a finished ``chexviz demo --out DIR`` (its
``summary.json``), or runs the demo first.

    python docs/scripts/layer_tradeoff.py --out demo-out
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chexviz import (
    CheXpertDataset,
    GradCAM,
    MultiLabelClassifier,
    anatomical_prior,
    load_boxes,
    score_localization,
    select_boxes,
    split_by_patient,
    summarize_localization,
)
from chexviz.demo import SPLIT_FRACTIONS, run_demo

LAYERS: dict[str, list[str]] = {
    "block4 (default)": ["backbone.features.block4"],
    "block3": ["backbone.features.block3"],
    "block2": ["backbone.features.block2"],
    "block3 + block4 fused": ["backbone.features.block3", "backbone.features.block4"],
}


def main() -> None:
    """Prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args()
    if not (args.out / "summary.json").is_file():
        run_demo(args.out, progress=False)
    summary = json.loads((args.out / "summary.json").read_text())
    model = MultiLabelClassifier.load(summary["model"])
    release = Path(summary["data"])
    data = CheXpertDataset(release, image_size=model.image_size, cache_dir=summary["cache"])
    train, _, test = split_by_patient(data, SPLIT_FRACTIONS, seed=0)
    boxes = load_boxes(release / "train_boxes.csv")
    prior = anatomical_prior(select_boxes(boxes, train), model.image_size)
    header = "| layer | map | pointing game | random point | anatomical prior | IoU | prior IoU "
    print(header + "| energy in box | prior energy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, layers in LAYERS.items():
        for method in ("gradcam",) if len(layers) == 1 else ("layercam",):
            cam = GradCAM(model, layers, method=method)
            scores = score_localization(
                cam, test, boxes, classes="true", progress=False, prior=prior
            )
            side = next(iter(cam.explain(test[0][0], classes=[0]).raw_maps[0].values())).shape
            o = summarize_localization(scores).loc["overall"]
            print(
                f"| {name} ({method}) | {side[0]}x{side[1]} | {o['hit_rate']:.3f} | "
                f"{o['chance']:.3f} | {o['prior_hit_rate']:.3f} | {o['iou']:.3f} | "
                f"{o['prior_iou']:.3f} | {o['energy']:.3f} | {o['prior_energy']:.3f} |"
            )


if __name__ == "__main__":
    main()
