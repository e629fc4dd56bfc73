"""One command that proves chexviz's GPU path: ``make gpu-check`` (or this script).

Seven checks, each a row of the final table (``pass``, ``FAIL`` or ``info``):

1. **train + reload**: two study backbones train for an epoch on a synthetic set with mixed
   precision and ``channels_last``; ``best.safetensors`` reloads to the same weights and
   ``last.safetensors`` resumes for one more epoch.
2. **Grad-CAM CUDA vs CPU**: the same model's maps on the GPU and on the CPU (default layer, an
   earlier layer, both fused), float32 with TF32 off, within ``HEATMAP_ATOL``.
3. **Trainer vs bare loop**: each study backbone trained by ``Trainer.fit`` and by a minimal
   loop with the same settings (autocast, ``channels_last``, fused Adam, pinned memory) on the
   same in-memory data, round-robin, medians: the Trainer's overhead; then one epoch under
   ``torch.cuda.set_sync_debug_mode("warn")``: host synchronisations per step.
4. **data path**: images/s into a DataLoader from the memory-mapped cache and from lazy JPEG
   decoding, for several worker counts, and whether each backbone would be data-bound.
5. **DDP**: two ranks under ``torchrun`` (over Gloo when they share one GPU, NCCL with a GPU
   each): ``main_process_first`` ordering, identical weights on both ranks, and Grad-CAM of
   the DDP-wrapped model on rank 0 alone (which hangs if the wrapper is not removed).
6. **compile**: ``Trainer(compile=True)`` for two epochs (the graph count must not grow in the
   second) and Grad-CAM of the compiled model against the eager one.
7. **estimate**: one table per backbone and the full study's wall time estimated from the
   measured rates (30,000 / 5,000 / 5,000 images, 15 epochs, four models).

Exit status 1 when a check fails. ``--device cpu --toy`` runs everything at toy size on the
CPU in seconds (the test suite does, so the script cannot rot); there the timings mean nothing
and the GPU-only parts (sync counting, ``compile=True``) are reported as not applicable.

Usage:
    python benchmarks/gpu_check.py [--device cuda] [--out DIR] [--report FILE.json] [--checks 25]
    python benchmarks/gpu_check.py --device cpu --toy
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from chexviz import (
    CheXpertDataset,
    GradCAM,
    MultiLabelClassifier,
    Trainer,
    make_synthetic_chexpert,
    split_by_patient,
)
from chexviz.training import distributed
from chexviz.training.checkpoint import BEST_NAME

STUDY_BACKBONES = ("densenet121", "mobilenet_v2", "inception_v3", "vgg16")
# An earlier layer per backbone (a finer map than the default one) for the Grad-CAM check.
EARLIER_LAYER = {
    "simple_cnn": "backbone.features.block3",
    "densenet121": "backbone.features.denseblock3",
    "mobilenet_v2": "backbone.features.13",
    "inception_v3": "backbone.features.Mixed_6e",
    "vgg16": "backbone.features.22",
}
# Normalised heatmaps lie in [0, 1]; float32 on both devices with TF32 off differ by rounding
# and summation order only, far below this.
HEATMAP_ATOL = 2e-3
STUDY = {"train": 30_000, "val": 5_000, "test": 5_000, "epochs": 15}


@dataclass(frozen=True)
class Size:
    """How big the check runs: the real one on a GPU, the toy one in the CPU test suite."""

    image: int
    batch: int
    patients: int  # synthetic patients (about 2.9 frontal images each)
    backbones: tuple[str, ...]  # timed in check 3
    trained: tuple[str, ...]  # trained and reloaded in check 1
    cam_backbone: str
    compile_backbone: str
    steps: int  # optimizer steps per timed run in check 3
    repeats: int
    workers: tuple[int, ...]
    data_batches: int  # timed batches per data-path configuration
    ddp_image: int


FULL = Size(
    image=128,
    batch=64,
    patients=1100,
    backbones=STUDY_BACKBONES,
    trained=("densenet121", "mobilenet_v2"),
    cam_backbone="densenet121",
    compile_backbone="mobilenet_v2",
    steps=40,
    repeats=3,
    workers=(0, 2, 4, 8, 16),
    data_batches=30,
    ddp_image=64,
)
TOY = Size(
    image=32,
    batch=8,
    patients=24,
    backbones=("simple_cnn",),
    trained=("simple_cnn",),
    cam_backbone="simple_cnn",
    compile_backbone="simple_cnn",
    steps=3,
    repeats=1,
    workers=(0, 1),
    data_batches=2,
    ddp_image=32,
)


@dataclass
class Report:
    rows: list[dict[str, str]] = field(default_factory=list)
    backbones: dict[str, dict[str, float]] = field(default_factory=dict)
    data: dict[str, float] = field(default_factory=dict)
    estimate_minutes: float | None = None

    def add(self, check: str, status: str, result: str, detail: str = "") -> None:
        self.rows.append({"check": check, "status": status, "result": result, "detail": detail})
        print(f"[{status}] {check}: {result}" + (f" ({detail})" if detail else ""), flush=True)

    @property
    def failed(self) -> bool:
        return any(row["status"] == "FAIL" for row in self.rows)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_data(count: int, size: int, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, size, size, generator=generator)
    targets = (torch.rand(count, 14, generator=generator) > 0.7).float()
    return TensorDataset(images, targets)


def _calibrated(name: str, size: int, seed: int = 0) -> MultiLabelClassifier:
    """A random-init model whose BatchNorm statistics come from random images, so activations
    and gradients have realistic magnitudes (a raw random init makes deep maps vanish)."""
    torch.manual_seed(seed)
    model = MultiLabelClassifier(name, image_size=size)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, size, size, generator=torch.Generator().manual_seed(seed + 1)))
    return model.eval()


# ---------------------------------------------------------------------------- 1: train + reload
def check_train_and_reload(
    report: Report, size: Size, device: torch.device, root: Path, out: Path
) -> None:
    data = CheXpertDataset(root, image_size=size.image, cache_dir=out / "cache", progress=False)
    train, val = split_by_patient(data, (0.85, 0.15), seed=0)
    for name in size.trained:
        torch.manual_seed(0)
        model = MultiLabelClassifier(name, image_size=size.image)
        folder = out / f"train-{name}"
        trainer = Trainer(
            model, epochs=1, batch_size=size.batch, device=device, out_dir=folder, progress=False
        )
        began = time.perf_counter()
        history = trainer.fit(train, val)
        seconds = time.perf_counter() - began
        conv = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1)
        layout_ok = device.type != "cuda" or conv.is_contiguous(memory_format=torch.channels_last)
        amp = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off"
        reloaded = MultiLabelClassifier.load(folder / BEST_NAME)
        saved = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        same = all(torch.equal(saved[k], v) for k, v in reloaded.state_dict().items())
        torch.manual_seed(0)
        again = MultiLabelClassifier(name, image_size=size.image)
        resumed = Trainer(
            again, epochs=2, batch_size=size.batch, device=device, out_dir=folder, progress=False
        ).fit(train, val, resume=True)
        loss = history[0].train_loss
        ok = layout_ok and same and len(resumed) == 2 and math.isfinite(loss)
        report.add(
            f"1 train+reload {name}",
            "pass" if ok else "FAIL",
            f"epoch in {seconds:.1f} s, train loss {loss:.3f}, amp {amp}",
            f"{len(train)} images; channels_last {layout_ok}; best reloads identical {same}; "
            f"resumed to epoch {len(resumed)}",
        )


# ---------------------------------------------------------------------------- 2: Grad-CAM
def check_gradcam_devices(report: Report, size: Size, device: torch.device) -> None:
    name = size.cam_backbone
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = _calibrated(name, size.image)
    images = torch.rand(4, 1, size.image, size.image, generator=torch.Generator().manual_seed(2))
    on_cpu = model
    on_device = _calibrated(name, size.image).to(device)
    layers: dict[str, Any] = {
        "default": None,
        "earlier": EARLIER_LAYER[name],
        "fused": [EARLIER_LAYER[name], model.target_layer_name],
    }
    # float64 on the CPU is the reference both float32 runs are measured against: a map that
    # sums many nearly cancelling channel terms (an early layer of a random-weight model) can
    # differ by more than HEATMAP_ATOL between two float32 devices through rounding alone, and
    # then the CPU's own float32 map is as far from the float64 one.
    exact = copy.deepcopy(on_cpu).double()
    for label, layer in layers.items():
        classes = list(range(4))
        reference = GradCAM(exact, layer).explain(images.double(), classes=classes)
        expected = GradCAM(on_cpu, layer).explain(images, classes=classes)
        got = GradCAM(on_device, layer).explain(images, classes=classes)
        worst = _worst(got, expected)
        device_error, cpu_error = _worst(got, reference), _worst(expected, reference)
        rounding = device_error <= max(HEATMAP_ATOL, 2 * cpu_error)
        report.add(
            f"2 Grad-CAM {device.type} vs cpu, {label} layer",
            "pass" if worst <= HEATMAP_ATOL or rounding else "FAIL",
            f"max abs heatmap difference {worst:.1e} (tolerance {HEATMAP_ATOL:.0e}); "
            f"from float64: {device.type} {device_error:.1e}, cpu {cpu_error:.1e}",
            f"{name}, {got.layer}, float32, TF32 off; passes within the tolerance, or when "
            f"{device.type} is no more than twice as far from float64 as the CPU's float32",
        )


def _worst(first: Any, second: Any) -> float:
    """The largest absolute difference between two explanations' normalised heatmaps."""
    return max(
        float((first.heatmaps[b][k].double() - second.heatmaps[b][k].double()).abs().max())
        for b in range(len(second.heatmaps))
        for k in second.heatmaps[b]
    )


# ---------------------------------------------------------------------------- 3: overhead
def _bare_loop(
    model: nn.Module, data: TensorDataset, device: torch.device, amp: Any, batch: int
) -> None:
    """A minimal training loop with the Trainer's settings, for the overhead comparison."""
    cuda = device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, fused=True if cuda else None)
    loader = DataLoader(data, batch_size=batch, shuffle=True, pin_memory=cuda)
    model.train()
    for images, targets in loader:
        fmt = torch.channels_last if cuda else torch.contiguous_format
        images = images.to(device, non_blocking=True, memory_format=fmt)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(images)
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _trainer(model: MultiLabelClassifier, device: torch.device, batch: int) -> Trainer:
    return Trainer(
        model,
        epochs=1,
        batch_size=batch,
        device=device,
        num_workers=0,
        threshold_metric=None,
        progress=False,
    )


def _trainer_fit(
    model: MultiLabelClassifier, data: TensorDataset, device: torch.device, batch: int
) -> None:
    _trainer(model, device, batch).fit(data)


def check_overhead(report: Report, size: Size, device: torch.device) -> None:
    count = size.batch * size.steps
    data = _random_data(count, size.image)
    for name in size.backbones:
        torch.manual_seed(0)
        model = MultiLabelClassifier(name, image_size=size.image)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        amp = _trainer(model, device, size.batch).amp_dtype  # also moves the model

        runs: dict[str, Callable[[], None]] = {
            "loop": functools.partial(_bare_loop, model, data, device, amp, size.batch),
            "trainer": functools.partial(_trainer_fit, model, data, device, size.batch),
        }
        rates: dict[str, list[float]] = {key: [] for key in runs}
        for run in runs.values():  # warm-up: cuDNN autotuning, allocator
            model.load_state_dict(initial)
            run()
        for _ in range(size.repeats):
            for key, run in runs.items():
                model.load_state_dict(initial)
                _sync(device)
                began = time.perf_counter()
                run()
                _sync(device)
                rates[key].append(count / (time.perf_counter() - began))
        loop, trainer = (statistics.median(rates[key]) for key in ("loop", "trainer"))
        syncs = _syncs_per_step(model, data, device, size)
        inference = _inference_rate(model, data, device, size)
        report.backbones[name] = {
            "loop_images_per_s": loop,
            "trainer_images_per_s": trainer,
            "overhead_percent": 100 * (loop / trainer - 1),
            "syncs_per_step": syncs,
            "inference_images_per_s": inference,
        }
        sync_text = "n/a on CPU" if math.isnan(syncs) else f"{syncs:.2f}"
        report.add(
            f"3 Trainer vs bare loop {name}",
            "info",
            f"Trainer {trainer:.0f} images/s, loop {loop:.0f}, "
            f"overhead {100 * (loop / trainer - 1):+.1f}%",
            f"host syncs per step {sync_text}; inference {inference:.0f} images/s; "
            f"batch {size.batch}, {size.steps} steps, median of {size.repeats}",
        )
        if not math.isnan(syncs) and syncs >= 1:
            report.add(f"3 host syncs {name}", "FAIL", f"{syncs:.2f} per step (expected < 1)")


def _inference_rate(
    model: MultiLabelClassifier, data: TensorDataset, device: torch.device, size: Size
) -> float:
    """Images/s of ``Trainer.predict``: one untimed call, then the median of ``size.repeats``.

    The first call pays for cuDNN's autotuning of the eval-mode shapes (and, for the last short
    batch, one more shape); timed alone it made VGG-16 look 45x slower at inference than at
    training on the first H200 run (156 against 7,035 images/s).
    """
    trainer = _trainer(model, device, size.batch)
    trainer.predict(data)
    rates = []
    for _ in range(size.repeats):
        _sync(device)
        began = time.perf_counter()
        trainer.predict(data)
        _sync(device)
        rates.append(len(data) / (time.perf_counter() - began))
    return statistics.median(rates)


def _syncs_per_step(
    model: MultiLabelClassifier, data: TensorDataset, device: torch.device, size: Size
) -> float:
    """Synchronising CUDA calls per step of one Trainer epoch (nan on CPU: not observable)."""
    if device.type != "cuda":
        return math.nan
    trainer = _trainer(model, device, size.batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.fit(data)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchronizing" in str(w.message)]
    return len(syncs) / max(1, len(data) // size.batch)


# ---------------------------------------------------------------------------- 4: data path
def _loader_rate(dataset: Dataset[Any], workers: int, size: Size, cuda: bool) -> float:
    """Images/s a DataLoader delivers once every worker is running (epochs repeat as needed)."""
    options: dict[str, Any] = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
    loader = DataLoader(
        dataset,
        batch_size=size.batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=cuda,
        drop_last=True,
        **options,
    )
    if len(loader) == 0:
        raise ValueError(f"the data set has fewer than {size.batch} images")
    # Untimed: the batches the workers prefetch before the first is asked for (4 each). Timing
    # them measured the queue, not the workers: 214,610 images/s with 16 workers on the first
    # H200 run, against 25,499 with 8.
    warm = max(1, workers * options.get("prefetch_factor", 1))
    timed = max(size.data_batches, 2 * warm)  # longer than the queue, so the workers set the pace
    seen, began = 0, 0.0
    while True:
        for _ in loader:
            seen += 1
            if seen == warm:
                began = time.perf_counter()
            elif seen == warm + timed:
                return timed * size.batch / (time.perf_counter() - began)


def check_data_path(
    report: Report, size: Size, device: torch.device, root: Path, out: Path
) -> None:
    cached = CheXpertDataset(root, image_size=size.image, cache_dir=out / "cache", progress=False)
    lazy = CheXpertDataset(root, image_size=size.image, progress=False)
    cpus = _cpus()
    for workers in size.workers:
        if workers > cpus:
            continue
        for label, dataset in (("cache", cached), ("lazy", lazy)):
            rate = _loader_rate(dataset, workers, size, device.type == "cuda")
            report.data[f"{label}/{workers}"] = rate
            per_worker = f", {rate / workers:.0f} per worker" if workers else ""
            report.add(
                f"4 data {label}, {workers} workers",
                "info",
                f"{rate:.0f} images/s{per_worker}",
                f"{size.image} px, batch {size.batch}, "
                f"{max(size.data_batches, 8 * workers)} batches timed after the prefetched ones",
            )
    default_rate = _default_data_rate(report, size, device)
    old_rate = report.data.get(f"lazy/{_nearest(4, size.workers, cpus)}")
    for name, figures in report.backbones.items():
        train = figures["trainer_images_per_s"]
        verdicts = []
        for label, rate in (
            ("cache + default workers", default_rate),
            ("lazy, 4 workers", old_rate),
        ):
            if rate is not None:
                verdicts.append(f"{label}: {'DATA-BOUND' if rate < train else 'ok'}")
        report.add(f"4 data-bound? {name}", "info", "; ".join(verdicts), f"trains {train:.0f}/s")


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_data_rate(report: Report, size: Size, device: torch.device) -> float | None:
    """Measured cache rate at (the measured count nearest to) the Trainer's default workers."""
    workers = Trainer(MultiLabelClassifier("simple_cnn", image_size=32), device=device).num_workers
    return report.data.get(f"cache/{_nearest(workers, size.workers, _cpus())}")


def _nearest(workers: int, measured: tuple[int, ...], cpus: int) -> int:
    candidates = [w for w in measured if w <= cpus]
    return min(candidates, key=lambda w: (abs(w - workers), w))


# ---------------------------------------------------------------------------- 5: DDP
def check_ddp(report: Report, size: Size, device: torch.device, out: Path) -> None:
    folder = out / "ddp"
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(Path(__file__).resolve()),
        "--ddp-worker",
        str(folder),
        "--device",
        device.type,
        "--image-size",
        str(size.ddp_image),
    ]
    began = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        report.add("5 DDP under torchrun", "FAIL", "timed out (a rank waits for the other)")
        return
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        report.add("5 DDP under torchrun", "FAIL", f"exit {done.returncode}", done.stderr[-2000:])
        return
    ranks = [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [load_file(folder / f"rank{r}.safetensors") for r in (0, 1)]
    identical = all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    ordered = ranks[1]["saw_rank0_file"]
    cam = ranks[0]["gradcam_matches"]
    ok = identical and ordered and cam
    report.add(
        "5 DDP under torchrun, 2 ranks",
        "pass" if ok else "FAIL",
        f"identical weights {identical}; rank 0 first {ordered}; Grad-CAM of DDP model {cam}",
        f"backend {ranks[0]['backend']}, devices {ranks[0]['device']} / {ranks[1]['device']}, "
        f"sync_bn {ranks[0]['sync_bn']}, {seconds:.0f} s with start-up",
    )


def ddp_worker(folder: Path, device_name: str, image: int) -> None:
    import torch.distributed as dist

    context = distributed.detect()
    device = distributed.resolve_device(device_name, context)
    distributed.setup(context, device)
    marker = folder / "prepared-by-rank0"
    with distributed.main_process_first(context):
        if context.is_main:
            time.sleep(0.5)  # rank 1 must still be waiting
            marker.write_text("rank 0")
        saw = marker.exists()
    sync_bn = device.type == "cuda" and torch.cuda.device_count() >= 2
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", image_size=image, dropout=0.3)
    trainer = Trainer(
        model, batch_size=16, epochs=2, lr=1e-3, device=device, progress=False, sync_bn=sync_bn
    )
    trainer.fit(_random_data(96, image), _random_data(24, image, seed=1))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"rank{context.rank}.safetensors"))
    result: dict[str, Any] = {
        "saw_rank0_file": saw,
        "backend": dist.get_backend(),
        "device": str(device),
        "sync_bn": sync_bn,
    }
    if context.is_main:
        # Rank 1 does not take part: a DDP forward here would wait for it for ever.
        images = torch.rand(2, 1, image, image)
        wrapped = GradCAM(trainer._network).explain(images, classes=[0, 1])  # the DDP wrapper
        plain = GradCAM(model).explain(images, classes=[0, 1])
        result["gradcam_matches"] = all(
            torch.equal(wrapped.heatmaps[b][k], plain.heatmaps[b][k])
            for b in range(2)
            for k in plain.heatmaps[b]
        )
    dist.barrier()
    (folder / f"rank{context.rank}.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------- 6: compile
def _graph_count() -> int | None:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])


def check_compile(report: Report, size: Size, device: torch.device) -> None:
    name = size.compile_backbone
    if device.type != "cuda":
        # compile=True is CUDA-only in the Trainer; the unwrapping still gets checked with
        # dynamo's tracing ("eager" backend: no code generation).
        model = _calibrated(name, size.image)
        compiled = torch.compile(model, backend="eager")
        images = torch.rand(2, 1, size.image, size.image)
        with torch.no_grad():
            compiled(images)
        same = _same_maps(GradCAM(compiled), GradCAM(model), images)
        report.add(
            "6 compile (CPU: Trainer ignores compile=True)",
            "pass" if same else "FAIL",
            f"Grad-CAM of torch.compile(model) equals the eager model's: {same}",
            "backend 'eager' on CPU",
        )
        return
    torch.manual_seed(0)
    model = MultiLabelClassifier(name, image_size=size.image)
    # One short last batch per epoch: with static shapes the Trainer leaves it out.
    data = _random_data(size.batch * size.steps + size.batch // 2, size.image)
    trainer = Trainer(
        model,
        epochs=1,
        batch_size=size.batch,
        device=device,
        compile=True,
        progress=False,
        threshold_metric=None,
    )
    began = time.perf_counter()
    trainer.fit(data)
    first = time.perf_counter() - began
    graphs = _graph_count()
    trainer.epochs = 2
    began = time.perf_counter()
    trainer.fit(data)  # a fresh fit of 2 epochs from scratch would recompile nothing new either
    second = time.perf_counter() - began
    stable = graphs is None or _graph_count() == graphs
    images = torch.rand(2, 1, size.image, size.image)
    eager = MultiLabelClassifier(name, image_size=size.image).to(device).eval()
    eager.to(memory_format=torch.channels_last)  # the layout the trained model has
    eager.load_state_dict(model.state_dict())
    # trainer._network is the compiled module the Trainer trains through.
    same = _same_maps(GradCAM(trainer._network), GradCAM(eager), images)
    report.add(
        f"6 compile=True {name}",
        "pass" if stable and same else "FAIL",
        f"first fit {first:.0f} s (compiling), next {second:.1f} s; graphs stable {stable}; "
        f"Grad-CAM of compiled model equals eager {same}",
        f"unique graphs {graphs}",
    )


def _same_maps(wrapped: GradCAM, plain: GradCAM, images: torch.Tensor) -> bool:
    first = wrapped.explain(images, classes=[0, 1])
    second = plain.explain(images, classes=[0, 1])
    return all(
        # Equal up to kernel rounding; a model explained through the wrapper would fail or
        # give other maps altogether.
        torch.allclose(first.heatmaps[b][k], second.heatmaps[b][k], atol=1e-4)
        for b in range(len(images))
        for k in second.heatmaps[b]
    )


# ---------------------------------------------------------------------------- 7: table
def estimate(report: Report, size: Size, device: torch.device) -> None:
    default_rate = _default_data_rate(report, size, device)
    total = 0.0
    print()
    print(
        "| backbone | Trainer images/s | bare loop images/s | overhead | host syncs/step "
        "| inference images/s | study minutes (estimate) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, f in report.backbones.items():
        train = f["trainer_images_per_s"]
        if default_rate is not None:
            train = min(train, default_rate)
        seconds = (
            STUDY["epochs"] * (STUDY["train"] / train + STUDY["val"] / f["inference_images_per_s"])
            + STUDY["test"] / f["inference_images_per_s"]
        )
        total += seconds
        syncs = "n/a" if math.isnan(f["syncs_per_step"]) else f"{f['syncs_per_step']:.2f}"
        print(
            f"| {name} | {f['trainer_images_per_s']:.0f} | {f['loop_images_per_s']:.0f} | "
            f"{f['overhead_percent']:+.1f}% | {syncs} | {f['inference_images_per_s']:.0f} | "
            f"{seconds / 60:.1f} |"
        )
    report.estimate_minutes = total / 60
    report.add(
        "7 study wall time",
        "info",
        f"estimated {total / 60:.1f} min for {', '.join(report.backbones)}",
        "training at min(Trainer rate, cached data rate), validation and test at the "
        "inference rate; data generation, cache build and start-up not included",
    )


def print_table(report: Report) -> None:
    print()
    print("| check | status | result | detail |")
    print("|---|---|---|---|")
    for row in report.rows:
        detail = row["detail"].replace("\n", " ").replace("|", "/")[:300]
        print(f"| {row['check']} | {row['status']} | {row['result']} | {detail} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--toy", action="store_true", help="tiny sizes (the CPU test suite)")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--report", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument(
        "--checks", default="1234567", help="which checks to run, e.g. 25 (4 and 7 use 3's rates)"
    )
    parser.add_argument("--ddp-worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker is not None:
        ddp_worker(args.ddp_worker, args.device, args.image_size)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --device cpu --toy", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    size = TOY if args.toy else FULL
    device = distributed.resolve_device(args.device)
    out = args.out or Path(tempfile.mkdtemp(prefix="chexviz-gpu-check-"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"# gpu_check {datetime.datetime.now().isoformat(timespec='seconds')} · {name} · "
        f"torch {torch.__version__} · {'toy' if args.toy else 'full'} size · {out}",
        flush=True,
    )
    report = Report()
    began = time.perf_counter()
    root = make_synthetic_chexpert(out / "synthetic", n_patients=size.patients, workers=None)
    checks: list[tuple[str, Callable[[], None]]] = [
        ("1", lambda: check_train_and_reload(report, size, device, root, out)),
        ("2", lambda: check_gradcam_devices(report, size, device)),
        ("3", lambda: check_overhead(report, size, device)),
        ("4", lambda: check_data_path(report, size, device, root, out)),
        ("5", lambda: check_ddp(report, size, device, out)),
        ("6", lambda: check_compile(report, size, device)),
        ("7", lambda: estimate(report, size, device)),
    ]
    for number, check in checks:
        if number not in args.checks:
            continue
        try:
            check()
        except Exception as error:  # one broken check must not hide the others' results
            logging.exception("check %s failed", number)
            report.add(f"{number} (crashed)", "FAIL", f"{type(error).__name__}: {error}")
    print_table(report)
    print(
        f"\ngpu_check: {time.perf_counter() - began:.0f} s, "
        f"{'FAILED' if report.failed else 'all checks passed'}"
    )
    if args.report is not None:
        args.report.write_text(
            json.dumps(
                {
                    "device": name,
                    "rows": report.rows,
                    "backbones": report.backbones,
                    "data": report.data,
                    "estimate_minutes": report.estimate_minutes,
                    "failed": report.failed,
                },
                indent=1,
            )
        )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
