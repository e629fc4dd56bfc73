"""Train tiny models with the Trainer, as one process or under torchrun, and dump the results.

Usage: python ddp_train.py OUT_DIR            (one process)
       python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_train.py OUT_DIR

Two models are trained on the same generated data: ``simple_cnn`` (BatchNorm: checks that all
ranks end with identical weights and buffers) and ``tiny_linear_cnn``, registered here without
BatchNorm, whose gradients do not depend on how a batch is split, so its one- and two-process
runs must agree. Each rank writes ``<model>-rank<r>.safetensors`` (final weights); rank 0 also
writes ``<model>.json`` with the history and the evaluation / prediction of the validation set,
and ``val.safetensors`` with the validation data.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.registry import Backbone, BackboneInfo, register_backbone
from chexviz.training.trainer import Trainer

LABELS = ("a", "b", "c")


@register_backbone("tiny_linear_cnn")
def tiny_linear_cnn(*, pretrained: bool, in_channels: int) -> Backbone:
    features = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
    )
    info = BackboneInfo("tiny_linear_cnn", 8, (0.5,), (0.25,), 8, "features.2")
    return Backbone(features, info)


def data(count: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 16, 16, generator=generator)
    # Labels depend on the image so that training moves AUROC; some entries are ignored.
    noise = 0.1 * torch.rand(count, 3, generator=generator)
    targets = (images.mean(dim=(1, 2, 3))[:, None] + noise > 0.55).float()
    targets[::3, 0] = float("nan")
    return TensorDataset(images, targets)


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    train, val = data(32, 1), data(13, 2)  # 13: DistributedSampler pads the validation set
    images, targets = val.tensors
    save_file({"images": images, "targets": targets}, str(out / "val.safetensors"))
    for backbone in ("simple_cnn", "tiny_linear_cnn"):
        torch.manual_seed(0)
        model = MultiLabelClassifier(backbone, labels=LABELS, image_size=16)
        trainer = Trainer(model, batch_size=8, epochs=2, lr=1e-2, seed=5, progress=False)
        history = trainer.fit(train, val)
        rank = trainer.context.rank
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out / f"{backbone}-rank{rank}.safetensors"))
        metrics = trainer.evaluate(val)
        probs = trainer.predict(val)
        if trainer.context.is_main:
            report = {
                "world_size": trainer.context.world_size,
                "history": history.to_dict(),
                "evaluate": metrics.to_dict(),
                "predict": probs.tolist(),
            }
            (out / f"{backbone}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
