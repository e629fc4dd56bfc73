"""Per-rank randomness under torchrun, and an exact resume on every rank.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_resume.py OUT_DIR

In the same two processes: an uninterrupted run (``OUT_DIR/full``), a run that crashes in the
middle of epoch 2 just after a checkpoint (``OUT_DIR/part``), and that run resumed. The model
has dropout and the data a random flip drawn from the global generator in the training
process, so every rank draws random numbers each step. Each rank writes its final weights of
both runs (``<run>/final-rank<r>.safetensors``) and ``draws-rank<r>.json``, the first flips it
drew.
"""

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.trainer import Trainer

LABELS = ("a", "b", "c")


class Flipping(Dataset[Any]):
    def __init__(self, crash_after: int | None = None) -> None:
        generator = torch.Generator().manual_seed(1)
        self.images = torch.rand(24, 1, 16, 16, generator=generator)
        noise = 0.2 * torch.rand(24, 3, generator=generator)
        self.targets = (self.images.mean(dim=(1, 2, 3))[:, None] + noise > 0.6).float()
        self.crash_after, self.fetches, self.flips = crash_after, 0, []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Any:
        self.fetches += 1
        if self.crash_after is not None and self.fetches > self.crash_after:
            raise RuntimeError("simulated crash")
        flip = bool(torch.rand(()) < 0.5)
        self.flips.append(flip)
        image = self.images[index].flip(-1) if flip else self.images[index]
        return image, self.targets[index]


def run(folder: Path, data: Flipping, resume: bool = False) -> Trainer:
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=16, dropout=0.5)
    trainer = Trainer(
        model,
        batch_size=8,
        epochs=2,
        lr=1e-2,
        seed=5,
        out_dir=folder,
        checkpoint_every=1,
        progress=False,
    )
    try:
        trainer.fit(data, resume=resume)
    except RuntimeError as error:
        if "simulated crash" not in str(error):
            raise
    return trainer


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    full_data = Flipping()
    full = run(out / "full", full_data)
    rank = full.context.rank
    # 1 item for the data check, then 12 per epoch on each rank (3 steps of 4): the crash
    # comes while reading epoch 2's second batch, after the checkpoint of its first step.
    run(out / "part", Flipping(crash_after=1 + 12 + 6))
    resumed = run(out / "part", Flipping(), resume=True)
    for name, trainer in (("full", full), ("part", resumed)):
        state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, str(out / name / f"final-rank{rank}.safetensors"))
    (out / f"draws-rank{rank}.json").write_text(json.dumps(full_data.flips[:12]))


if __name__ == "__main__":
    main()
