"""Localisation against the synthetic boxes for each target layer of the demo's model.

Runs the demo, then scores Grad-CAM at each block of
``simple_cnn`` and with blocks fused (LayerCAM-style) on the demo's test patients. Prints a
Markdown table for the explanations guide.

    python docs/scripts/layer_tradeoff.py --out demo-out
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chexviz import (
    CheXpertDataset,
    GradCAM,
    MultiLabelClassifier,
    load_boxes,
    score_localization,
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
    result = run_demo(args.out, progress=False)
    model = MultiLabelClassifier.load(result.model)
    release = result.data
    data = CheXpertDataset(release, image_size=model.image_size, cache_dir=result.cache)
    test = split_by_patient(data, SPLIT_FRACTIONS, seed=0)[2]
    boxes = load_boxes(release / "train_boxes.csv")
    print("| layer | map | pointing game | chance | IoU | energy in box |")
    print("|---|---|---|---|---|---|")
    for name, layers in LAYERS.items():
        for method in ("gradcam",) if len(layers) == 1 else ("layercam",):
            cam = GradCAM(model, layers, method=method)
            scores = score_localization(cam, test, boxes, classes="true", progress=False)
            side = next(iter(cam.explain(test[0][0], classes=[0]).raw_maps[0].values())).shape
            overall = summarize_localization(scores).loc["overall"]
            print(
                f"| {name} ({method}) | {side[0]}x{side[1]} | {overall['hit_rate']:.3f} | "
                f"{overall['chance']:.3f} | {overall['iou']:.3f} | {overall['energy']:.3f} |"
            )


if __name__ == "__main__":
    main()
