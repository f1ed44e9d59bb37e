"""Random DER models for export tests (fold / ONNX / precision), with non-trivial BN statistics and bias."""
from __future__ import annotations

import torch

from der_deploy.train.model import DER


def random_der(head="der", classes=5, size=(64, 64), seed=0):
    torch.manual_seed(seed)
    model = DER(classes, "resnet18", input_size=size, head=head)
    with torch.no_grad():  # so that nothing cancels by accident
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        model.classifier.bias.uniform_(-1, 1)
    return model.eval()
