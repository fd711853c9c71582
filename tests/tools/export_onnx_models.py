"""Exports networks to ONNX for limpq's importer tests.

For each network and export mode writes into OUT_DIR:
  <name>_<mode>.onnx        torch.onnx.export of the network in eval()
  <name>_<mode>.json        PyTorch's parameter count, the count the import
                            must have (batch norms folded in eval mode), the
                            opset, the input shape and the module paths of
                            the convs and linear layers
  <name>_<mode>.f32 / _logits.f32
                            an input batch (float32, N x C x H x W) and
                            PyTorch's logits on it
Modes: "eval" (TrainingMode.EVAL, opset 13: PyTorch folds each batch norm
into the conv before it) and "preserve" (TrainingMode.PRESERVE on a model in
eval(), opset 17: batch norm kept); the transformers (vit, swin, convnext)
in "opset13" and "opset17" (PRESERVE, constant folding off, as docs/onnx.md
exports). Every export has a dynamic batch axis.

The transformer set (small ViT, Swin, ConvNeXt and MaxViT configurations,
and TokenNet) is exported in modes opset13, opset17 and folded. Also shared_*.onnx, exported with README.md's flags from untrained networks
(equal initializers shared through Identity nodes, one conv read by two
nodes), and the refusal fixtures (bad_*.onnx): an unsupported op, a symbolic
spatial size, two inputs; and tinynet_training.onnx, a training-mode export
(TrainingMode.TRAINING: batch norm with its running statistics as outputs).

Files are rebuilt only when this script changes (a stamp holds its hash).

Run with Debian's python3 (python3-torch, python3-torchvision):
    /usr/bin/python3 tests/tools/export_onnx_models.py OUT_DIR [--set default|slow|all]
"""
import argparse
import hashlib
import json
import os
import sys

import torch
import torchvision
from torch.onnx import TrainingMode

from export_torchvision import randomise_batch_norms

SIDE = 32
CLASSES = 10
DEFAULT_SET = ["tinynet", "resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf",
               "regnet_y_400mf", "densenet121", "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet"]
SLOW_SET = ["resnet50", "mobilenet_v3_large", "vgg11_bn"]
# Small configurations of torchvision's transformers, ConvNeXt and MaxViT, exported
# with the documented flags (batch norm kept, constant folding off) at opsets
# 13 (LayerNorm spelt out) and 17 (LayerNormalization).
TRANSFORMER_SET = ["vit", "swin", "convnext", "maxvit", "tokennet"]
# The transformer set is also exported with torch.onnx.export's defaults
# ("folded"): the weights' names lost to constant folding.


class TinyNet(torch.nn.Module):
    """A network none of limpq's built-in architectures is: a non-square
    kernel, dilation, a grouped conv, one-sided zero padding, a
    squeeze-excitation gate, hardswish, ceil-mode pooling, a concat, dropout
    and a view-based flatten (Shape -> Gather -> Reshape)."""

    def __init__(self, num_classes=CLASSES):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
                                        torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.wide = torch.nn.Conv2d(16, 16, (1, 5), padding=(0, 2), bias=False)
        self.dilated = torch.nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4, bias=False)
        self.bn = torch.nn.BatchNorm2d(32)
        self.gate = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(32, 8, 1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 32, 1), torch.nn.Sigmoid())
        self.pad = torch.nn.ZeroPad2d((0, 1, 0, 1))
        self.down = torch.nn.Conv2d(32, 24, 2, stride=2, bias=False)
        self.pool = torch.nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.drop = torch.nn.Dropout(0.2)
        self.fc = torch.nn.Linear(24 * 4 * 4, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.wide(x), self.dilated(x)], 1)
        x = torch.nn.functional.hardswish(self.bn(x))
        x = x * self.gate(x)
        x = self.pool(self.down(self.pad(x)))
        return self.fc(self.drop(x.view(x.size(0), -1)))


class TokenNet(torch.nn.Module):
    """Patches as tokens through a linear layer over the last axis (exported
    as MatMul by a transposed weight, plus its bias) and a linear head on the
    pooled tokens (Gemm): the two linear forms of a transformer."""

    def __init__(self, num_classes=CLASSES):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.mix = torch.nn.Linear(8, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, num_classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(torch.nn.functional.gelu(self.mix(tokens))).mean(1))


def build(name):
    torch.manual_seed(0)
    if name == "tinynet":
        return TinyNet()
    if name == "tokennet":
        return TokenNet()
    if name == "vit":
        from torchvision.models.vision_transformer import VisionTransformer
        vit = VisionTransformer(image_size=SIDE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                                num_classes=CLASSES)
        # torchvision starts the head at zero, which no gradient passes at
        # first; a trained head does not.
        torch.nn.init.normal_(vit.heads.head.weight, std=0.02)
        return vit
    if name == "swin":
        from torchvision.models.swin_transformer import SwinTransformer
        return SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                               num_classes=CLASSES)
    if name == "convnext":
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt
        return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=CLASSES)
    if name == "maxvit":
        # A hybrid: MBConv blocks (depthwise conv, batch norm, squeeze-
        # excitation) and window/grid attention written with einsum.
        from torchvision.models.maxvit import MaxVit
        return MaxVit(input_size=(SIDE, SIDE), stem_channels=8, partition_size=4, block_channels=[16, 32],
                      block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=CLASSES)
    kwargs = dict(num_classes=CLASSES)
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True)
    return getattr(torchvision.models, name)(**kwargs)


def side_of(name):
    # vgg's classifier pools to 7x7, which ONNX export needs to divide the map.
    return 224 if name == "vgg11_bn" else SIDE


def folded_parameter_count(model, x):
    """The parameter count once every batch norm whose input is a conv's
    output, read by nothing else, is folded into that conv, as PyTorch's
    eval-mode export does: the batch norm's weight and bias go, the conv
    gains a bias where it had none. (MaxViT's first MBConv block reads its
    input, a conv's output, in its batch norm and its shortcut's pooling:
    that batch norm stays.)"""
    calls = []
    readers = {}
    seen = []  # every tensor read stays alive, so that no two share an id()

    def read(m, i):
        seen.append(i[0])
        readers[id(i[0])] = readers.get(id(i[0]), 0) + 1

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_pre_hook(read) for m in leaves]
    hooks += [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0], o)))
              for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    outputs = {id(o): m for m, i, o in calls if isinstance(m, torch.nn.Conv2d)}
    count = sum(p.numel() for p in model.parameters())
    for m, i, o in calls:
        if isinstance(m, torch.nn.BatchNorm2d) and id(i) in outputs and readers.get(id(i)) == 1:
            conv = outputs[id(i)]
            count -= m.weight.numel() + m.bias.numel()
            if conv.bias is None:
                count += conv.out_channels
    return count


def attention_modules(model):
    """The attention modules of torchvision's transformers: each computes
    two products of activations (scores and context)."""
    from torchvision.models.swin_transformer import ShiftedWindowAttention
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.MultiheadAttention, ShiftedWindowAttention))]


def gelu_calls(model, x):
    """The erf-form GELUs one forward pass computes (nn.GELU and
    F.gelu both call torch.nn.functional.gelu): each is five ONNX nodes
    that the importer runs as one op."""
    calls = []
    original = torch.nn.functional.gelu

    def counting(input, approximate="none"):
        calls.append(approximate)
        return original(input, approximate=approximate)

    torch.nn.functional.gelu = counting
    try:
        with torch.no_grad():
            model(x)
    finally:
        torch.nn.functional.gelu = original
    return sum(1 for a in calls if a == "none")


def expected_parameters(model, mode, x):
    """The parameter count of the imported file. TrainingMode.EVAL (modes
    eval and folded) folds a batch norm into the conv before it. Constant
    folding (mode folded) also computes Swin's and MaxViT's relative
    position biases from their tables at export: the tables are not in the
    file, the biases they gave are constants."""
    if mode == "eval":
        return folded_parameter_count(model, x)
    if mode == "folded":
        tables = sum(p.numel() for n, p in model.named_parameters() if n.endswith("relative_position_bias_table"))
        return folded_parameter_count(model, x) - tables
    return sum(p.numel() for p in model.parameters())


def export(name, mode, out_dir):
    """Modes: eval (opset 13, TrainingMode.EVAL), preserve (opset 17,
    TrainingMode.PRESERVE), opset13 and opset17 (PRESERVE with constant
    folding off, as docs/onnx.md exports), folded (torch.onnx.export's own
    defaults: its default opset, TrainingMode.EVAL, constant folding on)."""
    model = build(name)
    randomise_batch_norms(model)
    model.eval()
    torch.manual_seed(1)
    x = torch.randn(3, 3, side_of(name), side_of(name))
    with torch.no_grad():
        logits = model(x)
    path = os.path.join(out_dir, f"{name}_{mode}")
    names = dict(input_names=["input"], output_names=["logits"],
                 dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if mode == "folded":
        opset = torch.onnx._constants.ONNX_DEFAULT_OPSET
        torch.onnx.export(model, x[:1], path + ".onnx", **names)
    else:
        opset = 13 if mode in ("eval", "opset13") else 17
        torch.onnx.export(model, x[:1], path + ".onnx", opset_version=opset, **names,
                          training=TrainingMode.EVAL if mode == "eval" else TrainingMode.PRESERVE,
                          do_constant_folding=mode in ("eval", "preserve"))
    torch_params = sum(p.numel() for p in model.parameters())
    attention = attention_modules(model)
    info = {"name": name, "mode": mode, "opset": opset, "input_shape": list(x.shape[1:]),
            "torch_parameters": torch_params,
            "expected_parameters": expected_parameters(model, mode, x[:1]),
            "layers": [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))] +
                      [n + ".in_proj" for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)],
            "attention_products": 2 * len(attention),
            "gelus": gelu_calls(model, x[:1]),
            "parameter_names": [n for n, _ in model.named_parameters()]}
    x.numpy().tofile(path + ".f32")
    logits.numpy().tofile(path + "_logits.f32")
    with open(path + ".json", "w") as f:
        json.dump(info, f)


class CumSum(torch.nn.Module):
    """A network with an op limpq does not import (CumSum)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.cumsum(self.conv(x), 3).mean((2, 3))


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x, y):
        return (self.conv(x) + self.conv(y)).mean((2, 3))


class SharedConv(torch.nn.Module):
    """One conv applied twice (two Conv nodes read one initializer) and
    untrained batch norms, whose equal weights PyTorch's exporter shares
    through Identity nodes."""

    def __init__(self, num_classes=CLASSES):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.shared = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.bn3 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.stem(x)))
        x = torch.relu(self.bn2(self.shared(x)))
        x = torch.relu(self.bn3(self.shared(x)))
        return self.fc(x.mean((2, 3)))


def export_as_documented(model, path):
    """torch.onnx.export with README.md's flags, on an untrained model: batch
    norm kept, constant folding off, so equal initializers are shared."""
    torch.onnx.export(model.eval(), torch.randn(1, 3, SIDE, SIDE), path, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=TrainingMode.PRESERVE, do_constant_folding=False)


def export_shared(out_dir):
    torch.manual_seed(0)
    export_as_documented(torchvision.models.mobilenet_v3_small(num_classes=CLASSES),
                         os.path.join(out_dir, "shared_mobilenet_v3_small.onnx"))
    export_as_documented(SharedConv(), os.path.join(out_dir, "shared_conv.onnx"))


def export_refusals(out_dir):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    torch.onnx.export(CumSum().eval(), x, os.path.join(out_dir, "bad_unsupported_op.onnx"), opset_version=13,
                      input_names=["input"])
    torch.onnx.export(CumSum().eval(), x, os.path.join(out_dir, "bad_dynamic_spatial.onnx"), opset_version=13,
                      input_names=["input"], dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}})
    torch.onnx.export(TwoInputs().eval(), (x, x), os.path.join(out_dir, "bad_two_inputs.onnx"), opset_version=13,
                      input_names=["a", "b"])
    torch.onnx.export(build("tinynet").train(), torch.randn(2, 3, SIDE, SIDE), os.path.join(out_dir, "tinynet_training.onnx"),
                      opset_version=17, input_names=["input"], dynamic_axes={"input": {0: "batch"}},
                      training=TrainingMode.TRAINING, do_constant_folding=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--set", choices=["default", "slow", "all"], default="default")
    args = parser.parse_args()
    names = {"default": DEFAULT_SET, "slow": SLOW_SET, "all": DEFAULT_SET + SLOW_SET}[args.set]
    os.makedirs(args.out_dir, exist_ok=True)
    with open(__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(args.out_dir, f"stamp_{args.set}")
    if os.path.exists(stamp) and open(stamp).read() == digest:
        print(f"{args.out_dir}: up to date")
        return
    torch.set_num_threads(1)
    for name in names:
        for mode in ("eval", "preserve"):
            export(name, mode, args.out_dir)
            print(f"exported {name} ({mode})", flush=True)
    if args.set != "slow":
        for name in TRANSFORMER_SET:
            for mode in ("opset13", "opset17", "folded"):
                export(name, mode, args.out_dir)
                print(f"exported {name} ({mode})", flush=True)
    if args.set != "slow":
        export_refusals(args.out_dir)
        export_shared(args.out_dir)
    with open(stamp, "w") as f:
        f.write(digest)


if __name__ == "__main__":
    import warnings
    warnings.filterwarnings("ignore")
    sys.exit(main())
