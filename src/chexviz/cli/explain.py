"""``chexviz explain``: Grad-CAM heatmaps of some X-rays, as figures and an HTML report."""

from __future__ import annotations

import argparse

from chexviz.cli._common import load_model


def run_explain(args: argparse.Namespace) -> None:
    """Runs ``chexviz explain``: a figure per X-ray and one HTML report."""
    from chexviz.explain.figures import save_study_figure
    from chexviz.explain.gradcam import GradCAM
    from chexviz.explain.report import write_html_report

    model = load_model(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    cam = GradCAM(model, method=args.method)
    explanation = cam.explain([str(path) for path in args.images], classes=args.classes)
    for index, path in enumerate(args.images):
        save_study_figure(explanation, args.out / f"{index:03d}_{path.stem}.png", index=index)
    report = write_html_report(explanation, args.out / "report.html", names=args.images)
    print(f"report: {report}")
