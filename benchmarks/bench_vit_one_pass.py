"""All 14 classes of a vision transformer explained in one pass, next to pytorch-grad-cam.

One timm ``vit_small_patch16_224`` (3 input channels, 14 outputs, 224x224, random weights with
seed 0, eval mode) and one random image are shared by every measurement:

- (a) one plain forward pass of the image (``torch.no_grad``);
- (b) ``GradCAM(model).explain(image, classes=all 14)``: chexviz picks the layer
  (``blocks.11.norm1``) and the token view (1 class token dropped, 14x14 grid) by itself;
- (c) pytorch-grad-cam's ``GradCAM`` on the same layer with the ``reshape_transform`` its
  documentation asks the user to write, one call per class (14 calls), and its batched use:
  the image repeated 14 times in one call, one target per row.

Before timing, chexviz's heatmaps are checked against pytorch-grad-cam's (same layer, same
reshape), so both sides do the same work. Timed items run round-robin (one of each per round,
after one warm-up call each); the table reports medians and the ratios of medians from the same
run.

Run with ``OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/bench_vit_one_pass.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
import timm
import torch

from chexviz.explain.gradcam import GradCAM

SIZE = 224
CLASSES = 14
LAYER = "blocks.11.norm1"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=CLASSES, img_size=SIZE
    ).eval()


def _reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ViT recipe: drop the class token, 14x14 grid, channels first."""
    grid = tokens[:, 1:].reshape(tokens.shape[0], SIZE // 16, SIZE // 16, tokens.shape[2])
    return grid.permute(0, 3, 1, 2)


def _round_robin(items: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in items}
    for fn in items.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in items.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    from pytorch_grad_cam import GradCAM as ReferenceGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _model()
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    classes = list(range(CLASSES))
    cam = GradCAM(model)
    assert cam.target_layer_name == LAYER, cam.target_layer_name
    layer = model.get_submodule(LAYER)
    reference = ReferenceGradCAM(model, [layer], reshape_transform=_reshape_transform)

    explanation = cam.explain(image, classes=classes)
    theirs = np.stack([reference(image, targets=[ClassifierOutputTarget(k)])[0] for k in classes])
    ours = np.stack([explanation.heatmaps[0][str(k)].cpu().numpy() for k in classes])
    # pytorch-grad-cam resizes with OpenCV and adds 1e-7 before normalising: compare loosely.
    agreement = float(np.abs(ours - theirs).max())

    def forward() -> None:
        with torch.no_grad():
            model(image)

    def reference_all() -> None:
        for k in classes:
            reference(image, targets=[ClassifierOutputTarget(k)])

    repeated = image.repeat(CLASSES, 1, 1, 1)
    one_per_row = [ClassifierOutputTarget(k) for k in classes]

    def reference_batched() -> None:
        reference(repeated, targets=one_per_row)

    s = _round_robin(
        {
            "forward": forward,
            "chexviz": lambda: cam.explain(image, classes=classes),
            "pytorch-grad-cam": reference_all,
            "pytorch-grad-cam batched": reference_batched,
        },
        args.rounds,
    )
    reference.activations_and_grads.release()

    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "threads": torch.get_num_threads(),
        "layer": explanation.layer,
        "max_heatmap_difference": agreement,
        "median_s": s,
    }
    print(
        f"{results['date']}, {results['machine']}, torch {results['torch']}, timm "
        f"{results['timm']}, {results['threads']} thread(s)"
    )
    print(f"rounds: {args.rounds}; medians; layer: {explanation.layer}")
    print(f"max |chexviz - pytorch-grad-cam| heatmap difference: {agreement:.2g}\n")
    print("| measurement | median | ratio | goal |")
    print("| --- | ---: | ---: | --- |")
    print(f"| (a) forward, 1 image | {s['forward'] * 1e3:.1f} ms | 1.00x | |")
    print(
        f"| (b) chexviz, {CLASSES} classes of 1 image | {s['chexviz'] * 1e3:.1f} ms | "
        f"{s['chexviz'] / s['forward']:.2f}x (a) | <= 1.3x (a) |"
    )
    print(
        f"| (c) pytorch-grad-cam, {CLASSES} calls | {s['pytorch-grad-cam'] * 1e3:.1f} ms | "
        f"{s['pytorch-grad-cam'] / s['chexviz']:.1f}x (b) | >= 20x (b) |"
    )
    print(
        f"| (c) pytorch-grad-cam batched, 1 call of {CLASSES} rows | "
        f"{s['pytorch-grad-cam batched'] * 1e3:.1f} ms | "
        f"{s['pytorch-grad-cam batched'] / s['chexviz']:.1f}x (b) | |"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
