"""Quick start: train on the synthetic data set and explain a test image, in about 30 lines."""

from pathlib import Path

import chexviz

out = Path("quickstart-out")
folder = chexviz.make_synthetic_chexpert(out / "data", n_patients=120)
data = chexviz.CheXpertDataset(folder, image_size=64, cache_dir=out / "cache")
train, val, test = chexviz.split_by_patient(data, (0.7, 0.1, 0.2), seed=0)

model = chexviz.MultiLabelClassifier("simple_cnn", image_size=64, labels=data.labels)
trainer = chexviz.Trainer(model, lr=1e-3, epochs=3, out_dir=out / "checkpoints")
trainer.fit(train, val)
metrics = trainer.evaluate(test)
print(metrics.to_frame()[["auroc", "binary_accuracy", "accuracy", "majority_accuracy"]].round(3))

image, target = test[0]
cam = chexviz.GradCAM(model)
explanation = cam.explain(image)  # every predicted positive, at the tuned thresholds
if not explanation.positives[0]:  # nothing predicted: show one finding's map all the same
    explanation = cam.explain(image, classes=["Support Devices"])
for name in explanation.classes[0]:
    explanation.overlay(name).save(out / f"overlay_{name.replace(' ', '_')}.png")
chexviz.save_study_figure(explanation, out / "figure.png")
model.save(out / "model.safetensors")
print("wrote", sorted(p.name for p in out.glob("*.png")))
