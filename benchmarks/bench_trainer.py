"""Training throughput of Trainer.fit against a minimal hand-written PyTorch loop (CPU).

Both train the same model (same initial weights) on the same random data with Adam, lr 2e-4,
batch 64 and binary cross-entropy: the reference study's settings. Runs alternate between the
two (round-robin) so that machine load drifts hit both alike, and the medians are reported.
Each timed run includes building the optimizer (and the Trainer) and one pass over the data.

Two throughputs are reported: images per wall-clock second, and images per CPU second of this
process (``time.process_time``). On a shared machine the second is the steadier measure of the
work each loop does, since waiting for other processes does not count.

Usage:
    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/bench_trainer.py \
        [--models densenet121 mobilenet_v2] [--steps 3] [--repeats 5] [--size 128]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.trainer import Trainer

BATCH = 64


def manual_loop(model: MultiLabelClassifier, data: TensorDataset) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for images, targets in DataLoader(data, batch_size=BATCH, shuffle=True):
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def trainer_fit(model: MultiLabelClassifier, data: TensorDataset) -> None:
    Trainer(model, epochs=1, progress=False, threshold_metric=None).fit(data)


def timed(run, model, initial, data) -> tuple[float, float]:
    """Images per wall-clock second and per CPU second of one run."""
    model.load_state_dict(initial)
    wall, cpu = time.perf_counter(), time.process_time()
    run(model, data)
    return len(data) / (time.perf_counter() - wall), len(data) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["densenet121", "mobilenet_v2"])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per loop and model")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {datetime.date.today()} · {platform.processor() or platform.machine()} · "
        f"torch {torch.__version__} · {args.threads} thread(s) · "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} · "
        f"batch {BATCH}, {args.size}x{args.size}, {args.steps} steps per run, "
        f"{args.repeats} runs each"
    )
    print(
        "| model | loop images/s | Trainer images/s | overhead (wall) "
        "| loop images/CPU-s | Trainer images/CPU-s | overhead (CPU) |"
    )
    print("|---|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    count = BATCH * args.steps
    data = TensorDataset(
        torch.rand(count, 1, args.size, args.size, generator=generator),
        (torch.rand(count, 14, generator=generator) > 0.7).float(),
    )
    raw: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name in args.models:
        torch.manual_seed(0)
        model = MultiLabelClassifier(name, image_size=args.size)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        warm = TensorDataset(*(t[:BATCH] for t in data.tensors))
        timed(manual_loop, model, initial, warm)  # kernel selection, allocator warm-up
        timed(trainer_fit, model, initial, warm)
        results: dict[str, list[tuple[float, float]]] = {"manual": [], "trainer": []}
        for repeat in range(args.repeats):
            order = ["manual", "trainer"] if repeat % 2 == 0 else ["trainer", "manual"]
            for kind in order:
                run = manual_loop if kind == "manual" else trainer_fit
                results[kind].append(timed(run, model, initial, data))
        raw[name] = results
        cells = []
        for column in (0, 1):  # wall-clock, CPU
            manual = statistics.median(r[column] for r in results["manual"])
            trainer = statistics.median(r[column] for r in results["trainer"])
            cells += [f"{manual:.2f}", f"{trainer:.2f}", f"{100 * (manual / trainer - 1):+.1f}%"]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    for name, results in raw.items():
        for kind, values in results.items():
            shown = ", ".join(f"{wall:.2f}/{cpu:.2f}" for wall, cpu in values)
            print(f"<!-- {name} {kind} (wall/CPU images/s per run): {shown} -->")


if __name__ == "__main__":
    main()
