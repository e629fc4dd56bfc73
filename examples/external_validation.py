"""Train on CheXpert, test on MIMIC-CXR-JPG and NIH ChestX-ray14, check where it looks on NIH boxes.

With real data (each folder as released; see docs/guide/datasets.md):

    python examples/external_validation.py --chexpert /data/chexpert \
        --mimic /data/mimic-cxr-jpg/2.0.0 --nih /data/nih --out external-out

Without arguments it runs on synthetic stand-ins in the three layouts (what CI runs), where
the numbers only show that the pipeline works: the synthetic "hospitals" draw the same signs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from chexviz import (
    CHEXPERT_LABELS,
    CheXpertDataset,
    GradCAM,
    MIMICCXRDataset,
    MultiLabelClassifier,
    NIHChestXray14Dataset,
    Trainer,
    make_synthetic_chexpert,
    make_synthetic_mimic,
    make_synthetic_nih,
    read_nih_boxes,
    score_localization,
    split_by_patient,
    summarize_localization,
    validate_externally,
)
from chexviz.evaluate.external import internal_metrics_metadata


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chexpert", type=Path, help="CheXpert root (default: synthetic)")
    parser.add_argument("--mimic", type=Path, help="MIMIC-CXR-JPG folder (default: synthetic)")
    parser.add_argument("--nih", type=Path, help="NIH ChestX-ray14 folder (default: synthetic)")
    parser.add_argument("--out", type=Path, default=Path("external-out"))
    parser.add_argument("--backbone", default="simple_cnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--patients", type=int, default=150, help="synthetic CheXpert patients")
    parser.add_argument(
        "--external-patients", type=int, default=60, help="synthetic MIMIC and NIH patients"
    )
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates")
    parser.add_argument(
        "--min-cases",
        type=int,
        default=10,
        help="fewest positive and negative patients (boxed findings) a label needs to be scored",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    size = args.image_size

    # 1. Train on CheXpert, keep a patient-disjoint internal test set.
    chexpert = args.chexpert or make_synthetic_chexpert(out / "chexpert", n_patients=args.patients)
    data = CheXpertDataset(chexpert, image_size=size, cache_dir=out / "cache", progress=False)
    train, val, test = split_by_patient(data, (0.7, 0.1, 0.2), seed=0)
    model = MultiLabelClassifier(args.backbone, image_size=size, labels=CHEXPERT_LABELS)
    trainer = Trainer(model, lr=1e-3, epochs=args.epochs, batch_size=32, progress=False)
    trainer.fit(train, val)
    internal = trainer.evaluate(test)
    # The internal figures travel with the model, so `chexviz evaluate --dataset ...` shows them.
    model.save(out / "model.safetensors", extra_metadata=internal_metrics_metadata(internal))

    # 2. External validation: the official test splits, the model's labels mapped per data set.
    patients = args.external_patients
    mimic_root = args.mimic or make_synthetic_mimic(out / "mimic", patients=patients)
    nih_root = args.nih or make_synthetic_nih(out / "nih", patients=patients, image_size=256)
    common = {"image_size": size, "labels": model.labels, "progress": False}
    split = "test" if args.mimic or args.nih else None  # synthetic sets are small: use all
    mimic = MIMICCXRDataset(mimic_root, split=split, cache_dir=out / "cache", **common)
    nih = NIHChestXray14Dataset(nih_root, split=split, cache_dir=out / "cache", **common)
    summary = {}
    for name, dataset in (("MIMIC-CXR-JPG", mimic), ("NIH ChestX-ray14", nih)):
        # NIH's table shows the finding each output is compared with (Effusion, Mass | Nodule).
        result = validate_externally(
            model,
            dataset,
            name=name,
            replicates=args.bootstrap,
            progress=False,
            internal=internal,
            min_positives=args.min_cases,
            min_negatives=args.min_cases,
        )
        frame = result.to_frame()
        frame.to_csv(out / f"external_{name.split()[0].lower()}.csv")
        print(f"\n{name}: {result.images} images of {result.patients} patients")
        columns = ["source", "positives", "negatives", "patients", "status", "auroc", "ci_low"]
        columns += ["ci_high", "chance", "internal_auroc"]
        print(frame[columns].to_string(float_format="%.3f"))
        # Labels with too few patients of a class are named, with their counts, not scored.
        print(result.too_few_line() or "every annotated label has enough cases")
        summary[name] = result.to_dict()

    # 3. Where does it look? Grad-CAM against NIH's boxes, beside a random point's hit rate.
    # Drawn on 1024x1024 (the release's and the synthetic set's), scaled to each image's size.
    boxes = read_nih_boxes(nih_root / "BBox_List_2017.csv", root=nih_root)
    scores = score_localization(GradCAM(model), nih, boxes, classes="true", progress=False)
    table = summarize_localization(scores, min_findings=args.min_cases, patients=nih.patient_ids)
    table.to_csv(out / "nih_localization.csv")
    print("\nGrad-CAM on NIH boxes (pointing game hit rate beside a random point's):")
    columns = ["status", "findings", "patients", "hit_rate", "chance", "energy"]
    print(table[columns].to_string(float_format="%.3f"))
    summary["nih_localization"] = {
        "hit_rate": float(table.loc["overall", "hit_rate"]),
        "chance": float(table.loc["overall", "chance"]),
    }
    (out / "external_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nwrote {out / 'external_summary.json'}")


if __name__ == "__main__":
    main()
