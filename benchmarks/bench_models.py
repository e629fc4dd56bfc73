"""CPU cost of each built-in backbone inside a MultiLabelClassifier.

For every backbone (greyscale input, linear head, 14 labels) it reports the parameter count,
the forward time per image (eval mode, no grad) and the forward+backward time per image
(train mode). Every case first runs once on a 2-image batch (warm-up), then the cases run
round-robin, one timed batch per case per round, so slow drift of a shared machine's load
spreads over all of them; the median over rounds is reported.

Usage (OMP_WAIT_POLICY=PASSIVE stops OpenMP busy-waiting from skewing a shared machine;
``make bench`` exports it):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_models.py \\
        [--batch-size 64] [--image-size 128] [--rounds 3] [--out table.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import list_backbones

BUILTINS = (
    "simple_cnn",
    "mobilenet_v2",
    "efficientnet_b0",
    "resnet18",
    "densenet121",
    "resnet50",
    "inception_v3",
    "convnext_tiny",
    "vgg16",
)


def _forward(model: MultiLabelClassifier, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    return run


def _forward_backward(model: MultiLabelClassifier, x: torch.Tensor) -> Callable[[], None]:
    target = torch.zeros(x.shape[0], model.num_labels)

    def run() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        loss.backward()

    return run


def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument("--backbones", nargs="*", default=list(BUILTINS))
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    unknown = sorted(set(args.backbones) - set(list_backbones()))
    if unknown:
        parser.error(f"unknown backbones {unknown}; registered: {list_backbones()}")

    torch.manual_seed(0)
    n, s = args.batch_size, args.image_size
    x = torch.rand(n, 1, s, s)
    models = {name: MultiLabelClassifier(name, image_size=s) for name in args.backbones}
    kinds = (("fwd", _forward), ("fwd+bwd", _forward_backward))
    for model in models.values():
        for _, make in kinds:
            make(model, x[:2])()
    cases = {(name, kind): make(model, x) for name, model in models.items() for kind, make in kinds}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
    for round_index in range(1, args.rounds + 1):
        for key, fn in cases.items():
            times[key].append(_time(fn))
        print(f"round {round_index}/{args.rounds} done", flush=True)

    header = (
        f"Batch {n}, {s}x{s} greyscale, linear head, 14 labels; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"median of {args.rounds} rounds; {date.today().isoformat()}.\n"
    )
    lines = [
        header,
        "| backbone | parameters (M) | forward ms/image | forward+backward ms/image |",
        "|---|---:|---:|---:|",
    ]
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        fwd = statistics.median(times[(name, "fwd")]) / n * 1e3
        bwd = statistics.median(times[(name, "fwd+bwd")]) / n * 1e3
        lines.append(f"| {name} | {params:.2f} | {fwd:.1f} | {bwd:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
