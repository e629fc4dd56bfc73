"""GPU training throughput and peak memory of the study's backbones, fp32 vs mixed precision.

For each backbone, trains with Trainer.fit (Adam, lr 2e-4, batch 64, BCE; channels_last and
pinned memory as the trainer does on CUDA) for two epochs over random data and reports the
second epoch's images/s (the first includes cuDNN autotuning and allocator warm-up) and the
peak GPU memory, once with ``amp="off"`` (fp32) and once with ``amp="auto"`` (bf16 where the
GPU supports it, else fp16 with gradient scaling). Prints a Markdown table.

Without CUDA it prints why and exits with status 0 (so ``make bench`` still passes on CPU).

Usage:
    python benchmarks/bench_gpu_train.py [--models densenet121 mobilenet_v2 inception_v3 vgg16]
        [--size 128] [--steps 30] [--compile]
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch
from torch.utils.data import TensorDataset

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.trainer import Trainer

BATCH = 64
STUDY_BACKBONES = ["densenet121", "mobilenet_v2", "inception_v3", "vgg16"]


def measure(name: str, data: TensorDataset, amp: str, compile: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    model = MultiLabelClassifier(name, image_size=data.tensors[0].shape[-1])
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(
        model,
        epochs=2,
        amp=amp,
        compile=compile,
        progress=False,
        threshold_metric=None,
        num_workers=0,  # the data are tensors in memory: workers would only add copies
    )
    history = trainer.fit(data)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    del trainer, model
    return history[-1].images_per_second, peak_gib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=STUDY_BACKBONES)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per epoch")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the model")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "bench_gpu_train: no CUDA device is available, nothing to measure "
            "(this benchmark needs an NVIDIA GPU).",
            file=sys.stderr,
        )
        return
    device = torch.cuda.get_device_name()
    mixed = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    print(
        f"# {datetime.date.today()} · {device} · torch {torch.__version__} · batch {BATCH}, "
        f"{args.size}x{args.size}, {args.steps} steps per epoch, compile={args.compile}"
    )
    print(
        f"| model | fp32 images/s | {mixed} images/s | speed-up | fp32 peak GiB | "
        f"{mixed} peak GiB |"
    )
    print("|---|---|---|---|---|---|")
    count = BATCH * args.steps
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.rand(count, 1, args.size, args.size, generator=generator),
        (torch.rand(count, 14, generator=generator) > 0.7).float(),
    )
    for name in args.models:
        fp32, fp32_peak = measure(name, data, "off", args.compile)
        amp, amp_peak = measure(name, data, "auto", args.compile)
        print(
            f"| {name} | {fp32:.0f} | {amp:.0f} | {amp / fp32:.2f}x | {fp32_peak:.2f} | "
            f"{amp_peak:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
