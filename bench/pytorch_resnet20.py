"""The PyTorch-Python baselines for limpq's training-throughput benches.

Same network (resnet20 with 1x1 projection shortcuts, torchvision-style),
same recipe (SGD momentum 0.9, weight decay 5e-4, label smoothing 0.1), same
batch and input shape as `limpq_bench --benchmark_filter=TrainStep`.
With --quant W4A4, every conv and linear quantizes its weight and input with
LSQ written in plain PyTorch (the usual grad-scale and round-pass
formulation), searchable layers at W4A4 and the first conv and the classifier
at 8 bits, as limpq's QAT step does.
--channels-last converts the model and input to torch.channels_last, as
limpq trains by default; without it the script is the plain NCHW baseline.
--device cuda trains on the GPU, each step ending in a device synchronize
(as limpq_bench's "_cuda" rows do).
Prints one JSON line: {"images_per_second": ..., "threads": ...}.

    /usr/bin/python3 bench/pytorch_resnet20.py --threads 2 --steps 30 [--quant W4A4] [--channels-last]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def grad_scale(x, scale):
    return (x - x * scale).detach() + x * scale


def round_pass(x):
    return (x.round() - x).detach() + x


class LsqQuantizer(nn.Module):
    def __init__(self, bits, signed, is_weight):
        super().__init__()
        self.qn = -(2 ** (bits - 1)) if signed else 0
        self.qp = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
        self.bits = bits
        self.is_weight = is_weight
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self.initialized_host = False

    def forward(self, x):
        # A host-side flag, so that a GPU step never waits to read the buffer
        # (limpq's quantizers cache it the same way).
        if not self.initialized_host:
            with torch.no_grad():
                if self.is_weight:
                    m, s = x.mean(), x.std()
                    self.step.copy_(torch.maximum((m - 3 * s).abs(), (m + 3 * s).abs()) / 2 ** (self.bits - 1))
                else:
                    self.step.copy_(2 * x.abs().mean() / self.qp ** 0.5)
                self.initialized.fill_(1)
            self.initialized_host = True
        g = 1.0 / (x.numel() * self.qp) ** 0.5
        s = grad_scale(self.step.clamp(min=1e-5), g)
        return round_pass(torch.clamp(x / s, self.qn, self.qp)) * s


class QConv2d(nn.Conv2d):
    def quantize(self, wbits, abits, signed_input):
        self.wq = LsqQuantizer(wbits, True, True)
        self.aq = LsqQuantizer(abits, signed_input, False)

    def forward(self, x):
        if hasattr(self, "wq"):
            return self._conv_forward(self.aq(x), self.wq(self.weight), self.bias)
        return super().forward(x)


class QLinear(nn.Linear):
    def quantize(self, wbits, abits, signed_input):
        self.wq = LsqQuantizer(wbits, True, True)
        self.aq = LsqQuantizer(abits, signed_input, False)

    def forward(self, x):
        if hasattr(self, "wq"):
            return F.linear(self.aq(x), self.wq(self.weight), self.bias)
        return super().forward(x)


class BasicBlock(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = QConv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = QConv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(QConv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (self.downsample(x) if self.downsample is not None else x)
        return F.relu(out)


class ResNet20(nn.Module):
    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.conv1 = QConv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inp = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(3):
                blocks.append(BasicBlock(inp, planes, stride if i == 0 else 1))
                inp = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = QLinear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quant", default="", help="e.g. W4A4: LSQ QAT (first conv and classifier at 8 bits)")
    ap.add_argument("--channels-last", action="store_true", help="model and input in torch.channels_last")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet20()
    if args.quant:
        wbits, abits = (int(v) for v in args.quant.upper().lstrip("W").split("A"))
        layers = [m for m in model.modules() if isinstance(m, (QConv2d, QLinear))]
        for i, m in enumerate(layers):
            first, last = i == 0, i == len(layers) - 1
            m.quantize(8 if first or last else wbits, 8 if first or last else abits, signed_input=first)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 1, args.size, args.size).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - start
    print(json.dumps({"images_per_second": args.batch * args.steps / elapsed, "threads": args.threads,
                      "quant": args.quant or "fp32", "channels_last": args.channels_last,
                      "device": args.device, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
