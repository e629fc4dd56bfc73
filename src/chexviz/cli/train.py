"""``chexviz demo`` and ``chexviz train``: the commands that train a model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from chexviz.cli.evaluate import print_metrics

if TYPE_CHECKING:
    from chexviz.data.dataset import CheXpertDataset


def run_demo(args: argparse.Namespace) -> None:
    """Runs ``chexviz demo`` and prints its summary."""
    from chexviz import demo

    result = demo.run_demo(
        args.out,
        backbone=args.backbone,
        images=args.images,
        epochs=args.epochs,
        image_size=args.image_size,
        lr=args.lr,
        seed=args.seed,
        data_dir=args.data_dir,
        progress=args.progress,
    )
    print(demo.format_summary(result, backbone=args.backbone, epochs=args.epochs))


def run_train(args: argparse.Namespace) -> None:
    """Runs ``chexviz train``: trains, scores on ``valid.csv`` if there, saves the model."""
    from chexviz.data.cache import default_cache_dir
    from chexviz.data.dataset import CheXpertDataset
    from chexviz.data.splits import split_by_patient
    from chexviz.evaluate.external import internal_metrics_metadata
    from chexviz.models.classifier import MultiLabelClassifier
    from chexviz.training.distributed import resolve_device
    from chexviz.training.trainer import Trainer

    device = resolve_device(args.device)
    if not args.cache:
        args.cache_dir = None
    elif args.cache_dir is None and device.type == "cuda":
        # Decoding JPEGs on every read cannot keep a GPU busy; the memory-mapped cache can.
        args.cache_dir = default_cache_dir()

    def dataset(csv: str) -> CheXpertDataset:
        return CheXpertDataset(
            args.data,
            csv,
            image_size=args.image_size,
            in_channels=args.in_channels,
            uncertainty=args.uncertainty or "zeros",
            cache_dir=args.cache_dir,
            progress=args.progress,
        )

    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    full = dataset("train.csv")
    train, val = split_by_patient(full, (1 - args.val_fraction, args.val_fraction), seed=args.seed)
    model = MultiLabelClassifier(
        args.backbone,
        in_channels=args.in_channels,
        pretrained=args.pretrained,
        head=args.head,
        image_size=args.image_size,
        labels=full.labels,
    )
    trainer = Trainer(
        model,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        device=device,
        num_workers=args.workers,
        out_dir=args.out,
        seed=args.seed,
        progress=args.progress,
    )
    history = trainer.fit(train, val, resume=args.resume)
    main = trainer.context.is_main  # under torchrun only rank 0 writes and prints
    try:
        valid: CheXpertDataset | None = dataset("valid.csv")
    except FileNotFoundError:
        valid = None
    # valid.csv is the model's internal test set: its metrics travel in the weight file, where
    # `chexviz evaluate --dataset` shows them beside an external data set's.
    internal = (
        print_metrics(trainer, valid, args.out if main else None, quiet=not main)
        if valid is not None
        else None
    )
    if main:
        history.to_csv(args.out / "history.csv")
        history.to_json(args.out / "history.json")
        extra = internal_metrics_metadata(internal) if internal is not None else None
        model.save(args.out / "model.safetensors", extra_metadata=extra)
        print(f"model: {args.out / 'model.safetensors'}")
