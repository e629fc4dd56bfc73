"""Draws docs/images/any_model.png: a ViT's and a DenseNet's Grad-CAM maps of one synthetic X-ray.

Both models are chexviz classifiers trained for a few epochs on the same small synthetic set
(CPU, a few minutes): DenseNet-121 from torchvision and timm's ``vit_tiny_patch16_224`` through
the ``timm/`` prefix. Both are explained by the same call, ``GradCAM(model).explain(image,
classes=[label])``; the titles show the layer each one chose and how its output became a grid::

    python docs/scripts/make_any_model_figure.py           # writes docs/images/any_model.png

The printed lines (validation AUROC of the label, the layers) are what the guide quotes.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chexviz import (
    SIGN_LABELS,
    CheXpertDataset,
    GradCAM,
    MultiLabelClassifier,
    Trainer,
    make_synthetic_chexpert,
    split_by_patient,
)

MODELS = {
    "DenseNet-121 (torchvision)": "densenet121",
    "ViT-Tiny/16 (timm)": "timm/vit_tiny_patch16_224",
}


def main() -> None:
    """Trains both models, explains one image with each and saves the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/any_model.png"))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "any-model")
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    root = make_synthetic_chexpert(args.work / "data", n_patients=args.patients)
    data = CheXpertDataset(root, image_size=args.size, cache_dir=args.work / "cache")
    train, val = split_by_patient(data, (0.8, 0.2), seed=0)
    models, aurocs = {}, {}
    for title, name in MODELS.items():
        torch.manual_seed(0)
        model = MultiLabelClassifier(name, image_size=args.size, labels=data.labels)
        trainer = Trainer(
            model,
            epochs=args.epochs,
            batch_size=32,
            lr=3e-4,
            out_dir=args.work / name.replace("/", "-"),
            progress=False,
        )
        trainer.fit(train, val)
        models[title], aurocs[title] = model, trainer.evaluate(val).auroc
    # The validation image and drawn finding that both models score highest (the smaller of
    # the two probabilities): Grad-CAM of a class a model scores low is often blank, since
    # nothing at the layer speaks for it.
    images = torch.stack([val[i][0] for i in range(len(val))])
    truth = torch.stack([torch.as_tensor(val[i][1]) for i in range(len(val))]) == 1
    with torch.no_grad():
        lowest = torch.stack([torch.sigmoid(m.eval()(images)) for m in models.values()]).amin(0)
    lowest[~truth] = -1.0
    signs = [data.labels.index(label) for label in SIGN_LABELS]
    mask = torch.full_like(lowest, -1.0)
    mask[:, signs] = lowest[:, signs]
    row, column = divmod(int(mask.argmax()), mask.shape[1])
    image, label = images[row], data.labels[column]
    panels = []
    for title, model in models.items():
        explanation = GradCAM(model).explain(image, classes=[label])
        heatmap = explanation.heatmaps[0][label].cpu().numpy()
        probability = float(explanation.probabilities[0][column])
        print(
            f"{title}: validation AUROC for {label} {aurocs[title][column]:.3f}; probability "
            f"{probability:.2f}; layer {explanation.layer}"
        )
        panels.append(
            (
                f"{title}\nAUROC {aurocs[title][column]:.2f}, p={probability:.2f}; "
                f"{explanation.layer}",
                heatmap,
            )
        )

    figure = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    grey = image[0].cpu().numpy()
    axes[0].imshow(grey, cmap="gray")
    axes[0].set_title(f"synthetic X-ray, {label} drawn", fontsize=9)
    for axis, (title, heatmap) in zip(axes[1:], panels, strict=True):
        axis.imshow(grey, cmap="gray")
        axis.imshow(np.asarray(heatmap), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        axis.set_title(title, fontsize=8, wrap=True)
    for axis in axes:
        axis.set_axis_off()
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
