"""Train a tiny simple_cnn on random data with a checkpoint every epoch and every 2 steps.

Usage: python train_tiny.py OUT_DIR [--resume] [--delay SECONDS]

Used by tests/test_trainer.py to kill a run with SIGKILL and resume it. ``--delay`` sleeps in
each ``__getitem__`` so that the run is still going when the test kills it.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.training.trainer import Trainer

EPOCHS = 4
LABELS = ("a", "b", "c")


class SlowRandom(Dataset):
    def __init__(self, count: int, seed: int, delay: float) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, 1, 16, 16, generator=generator)
        self.targets = (torch.rand(count, len(LABELS), generator=generator) > 0.5).float()
        self.targets[::5, 1] = float("nan")
        self.delay = delay

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        time.sleep(self.delay)
        # Random augmentation from the global generator: resuming must restore it exactly.
        flip = torch.rand(()) < 0.5
        image = self.images[index].flip(-1) if flip else self.images[index]
        return image, self.targets[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MultiLabelClassifier("simple_cnn", labels=LABELS, image_size=16, dropout=0.2)
    trainer = Trainer(
        model,
        batch_size=8,
        epochs=EPOCHS,
        lr=1e-3,
        out_dir=args.out_dir,
        seed=3,
        scheduler="cosine",
        checkpoint_every=2,
        progress=False,
    )
    trainer.fit(
        SlowRandom(24, seed=1, delay=args.delay),
        SlowRandom(10, seed=2, delay=0.0),
        resume=args.resume,
    )
    model.save(args.out_dir / "final.safetensors")
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
