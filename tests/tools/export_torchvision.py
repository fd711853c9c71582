"""Exports randomly initialised torchvision models for limpq's parity test.

For each model writes <out>/<name>.pt (torch.save(dict(state_dict))) and
<out>/<name>_io.pt (a dict with the input batch and PyTorch's logits), with
batch-norm statistics and affine parameters randomised so that they matter.

Run with Debian's python3 (python3-torch, python3-torchvision):
    /usr/bin/python3 tests/tools/export_torchvision.py OUT_DIR
"""
import os
import sys

import torch
import torchvision


def randomise_batch_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def export(name, model, out_dir, size):
    torch.manual_seed(1)
    randomise_batch_norms(model)
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
    torch.save(dict(model.state_dict()), os.path.join(out_dir, name + ".pt"))
    torch.save({"input": x, "logits": logits}, os.path.join(out_dir, name + "_io.pt"))


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    export("resnet18", torchvision.models.resnet18(num_classes=10), out_dir, 64)
    export("mobilenet_v2", torchvision.models.mobilenet_v2(num_classes=10), out_dir, 64)


if __name__ == "__main__":
    main()
