"""What a Grad-CAM explanation costs next to a plain forward pass, and next to pytorch-grad-cam.

One DenseNet-121 ``MultiLabelClassifier`` (1 input channel, 14 labels, 128x128, random weights
with seed 0, eval mode) and one random image are shared by every measurement:

- (a) one plain forward pass of the image (``torch.no_grad``);
- (b) ``GradCAM(model).explain(image, classes=all 14)``;
- (c) pytorch-grad-cam's ``GradCAM`` on the same layer, one call per class (14 calls), and
  its batched use: the image repeated 14 times in one call, one target per row (one forward
  of 14 images, one backward); captum's ``LayerGradCam`` (14 calls) is timed alongside for
  reference;
- (d) a batch of 64 images, each explained for its own predicted positives, against one
  forward pass of the batch; a one-pass variant that keeps the autograd graph of the layers
  before the target layer is timed afterwards, to show what running them without a graph
  saves;
- (e) resident memory (RSS) over 1,000 consecutive ``explain`` calls on the image;
- peak RSS of one batch-64 explanation with and without a graph before the target layer,
  each in a fresh process.

Timed items run round-robin (one of each per round, after one warm-up call each) and the table
reports medians.

Run with ``OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/bench_gradcam.py``;
``--single-only`` times only the single-image items (a) to (c).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import torch

from chexviz.explain.gradcam import GradCAM
from chexviz.models.classifier import MultiLabelClassifier

SIZE = 128
BATCH = 64


def _model() -> MultiLabelClassifier:
    torch.manual_seed(0)
    return MultiLabelClassifier("densenet121", in_channels=1, image_size=SIZE).eval()


def _images(batch: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _graph_kept_explain(model: MultiLabelClassifier, images: torch.Tensor) -> int:
    """One forward, one batched backward, but with the autograd graph of the whole network."""
    captured: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        captured.append(output)

    handle = model.target_layer.register_forward_hook(hook)
    try:
        logits = model(images)
    finally:
        handle.remove()
    positives = torch.sigmoid(logits.detach()) >= model.thresholds
    slots = int(positives.sum(dim=1).max())
    rows = torch.zeros(slots, *logits.shape)
    for b, row in enumerate(positives):
        for j, k in enumerate(torch.nonzero(row).flatten().tolist()):
            rows[j, b, k] = 1.0
    (grads,) = torch.autograd.grad(logits, captured, rows, is_grads_batched=True)
    weights = grads.mean(dim=(-2, -1))
    maps = torch.relu(torch.einsum("jbc,bchw->jbhw", weights, captured[0].detach()))
    return int(maps.shape[0])


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


def _peak(variant: str) -> None:
    model = _model()
    images = _images(BATCH, seed=2)
    if variant == "chexviz":
        GradCAM(model).explain(images)
    else:
        _graph_kept_explain(model, images)
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still counts the parent's memory.
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds for single-image items")
    parser.add_argument("--batch-rounds", type=int, default=5, help="rounds for batch items")
    parser.add_argument("--memory-calls", type=int, default=1000)
    parser.add_argument(
        "--single-only", action="store_true", help="time only the single-image items (a)-(c)"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--peak", choices=["chexviz", "graph"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        _peak(args.peak)
        return

    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _model()
    cam = GradCAM(model)
    image = _images(1, seed=1)
    classes = list(range(len(model.labels)))
    reference = ReferenceGradCAM(model, [model.target_layer])
    captum = LayerGradCam(model, model.target_layer)

    def forward() -> None:
        with torch.no_grad():
            model(image)

    def reference_all() -> None:
        for k in classes:
            reference(image, targets=[ClassifierOutputTarget(k)])

    repeated = image.repeat(len(classes), 1, 1, 1)
    one_per_row = [ClassifierOutputTarget(k) for k in classes]

    def reference_batched() -> None:
        reference(repeated, targets=one_per_row)

    def captum_all() -> None:
        for k in classes:
            captum.attribute(image, target=k, relu_attributions=True)

    single = _round_robin(
        {
            "forward": forward,
            "chexviz": lambda: cam.explain(image, classes=classes),
            "pytorch-grad-cam": reference_all,
            "pytorch-grad-cam batched": reference_batched,
            "captum": captum_all,
        },
        args.rounds,
    )
    reference.activations_and_grads.release()
    model.zero_grad(set_to_none=True)  # pytorch-grad-cam's backward filled .grad
    if args.single_only:
        _print_single(single, args)
        return

    batch = _images(BATCH, seed=2)
    explained = cam.explain(batch)
    maps = sum(len(c) for c in explained.classes)
    slots = max(len(c) for c in explained.classes)

    def forward_batch() -> None:
        with torch.no_grad():
            model(batch)

    batched = _round_robin(
        {"forward": forward_batch, "chexviz": lambda: cam.explain(batch)}, args.batch_rounds
    )
    # Timed apart: its 3.5 GB of autograd buffers change the allocator's state for whatever
    # runs next, which made the other two items' timings depend on their order.
    batched["graph kept"] = _round_robin(
        {"graph kept": lambda: _graph_kept_explain(model, batch)}, args.batch_rounds
    )["graph kept"]

    gc.collect()
    rss: dict[int, float] = {}
    checkpoints = {10, args.memory_calls // 10, args.memory_calls // 2, args.memory_calls}
    for call in range(1, args.memory_calls + 1):
        cam.explain(image, classes=classes)
        if call in checkpoints:
            gc.collect()
            rss[call] = _rss_mb()

    peaks = {
        variant: float(
            subprocess.run(
                [sys.executable, __file__, "--peak", variant],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
        )
        for variant in ("chexviz", "graph")
    }

    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "single_s": single,
        "batch_s": batched,
        "batch_maps": maps,
        "batch_slots": slots,
        "rss_mb": rss,
        "peak_rss_mb": peaks,
    }
    _print(results, args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


def _single_rows(s: dict[str, float]) -> None:
    print("| measurement | median | ratio | goal |")
    print("| --- | ---: | ---: | --- |")
    print(f"| (a) forward, 1 image | {s['forward'] * 1e3:.1f} ms | 1.00x | |")
    print(
        f"| (b) chexviz, 14 classes of 1 image | {s['chexviz'] * 1e3:.1f} ms | "
        f"{s['chexviz'] / s['forward']:.2f}x (a) | <= 1.3x (a) |"
    )
    print(
        f"| (c) pytorch-grad-cam, 14 calls | {s['pytorch-grad-cam'] * 1e3:.1f} ms | "
        f"{s['pytorch-grad-cam'] / s['chexviz']:.1f}x (b) | >= 20x (b) |"
    )
    print(
        f"| (c) pytorch-grad-cam batched, 1 call of 14 rows | "
        f"{s['pytorch-grad-cam batched'] * 1e3:.1f} ms | "
        f"{s['pytorch-grad-cam batched'] / s['chexviz']:.1f}x (b) | |"
    )
    print(
        f"| captum LayerGradCam, 14 calls | {s['captum'] * 1e3:.1f} ms | "
        f"{s['captum'] / s['chexviz']:.1f}x (b) | |"
    )


def _header(args: argparse.Namespace) -> None:
    print(
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )


def _print_single(s: dict[str, float], args: argparse.Namespace) -> None:
    _header(args)
    print(f"rounds: {args.rounds} single-image; medians\n")
    _single_rows(s)


def _print(r: dict[str, Any], args: argparse.Namespace) -> None:
    s, b, rss = r["single_s"], r["batch_s"], r["rss_mb"]
    first, last = min(rss), max(rss)
    print(f"{r['date']}, {r['machine']}, torch {r['torch']}, {r['threads']} thread(s)")
    print(f"rounds: {args.rounds} single-image, {args.batch_rounds} batch; medians\n")
    _single_rows(s)
    print(f"| forward, batch of {BATCH} | {b['forward']:.2f} s | 1.00x | |")
    print(
        f"| (d) chexviz, batch of {BATCH}, {r['batch_maps']} maps ({r['batch_slots']} slots) | "
        f"{b['chexviz']:.2f} s | {b['chexviz'] / b['forward']:.2f}x | <= 1.5x |"
    )
    print(
        f"| same, graph kept before the target layer (timed after) | {b['graph kept']:.2f} s | "
        f"{b['graph kept'] / b['forward']:.2f}x | |"
    )
    print(
        f"| (e) RSS after {first} / {last} explain calls | {rss[first]:.0f} / {rss[last]:.0f} MB "
        f"| {rss[last] - rss[first]:+.1f} MB | flat |"
    )
    peaks = r["peak_rss_mb"]
    print(
        f"| peak RSS, batch of {BATCH}: chexviz / graph kept | "
        f"{peaks['chexviz']:.0f} / {peaks['graph']:.0f} MB | | |"
    )
    print("\nRSS by call:", ", ".join(f"{k}: {v:.1f} MB" for k, v in sorted(rss.items())))


if __name__ == "__main__":
    main()
