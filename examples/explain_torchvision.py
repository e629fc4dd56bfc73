"""Explain a plain torchvision model: GradCAM finds the last convolutional feature map itself."""

from pathlib import Path

import torch
import torchvision

import chexviz

model = torchvision.models.resnet18(weights=None, num_classes=14).eval()
cam = chexviz.GradCAM(model)
print("target layer:", cam.target_layer_name)  # layer4, the last map before global pooling

image = torch.rand(3, 224, 224)  # a plain model takes whatever tensor it was trained on
explanation = cam.explain(image, classes=[0, 3, 7])  # output indices name the classes "0".."13"
print({name: tuple(explanation.heatmap(name).shape) for name in explanation.classes[0]})
out = Path("torchvision-out")
out.mkdir(exist_ok=True)
explanation.overlay("3").save(out / "overlay_class3.png")
