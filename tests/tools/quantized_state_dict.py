"""limpq's quantized network rebuilt in PyTorch from `limpq export --format
state-dict`, with the formulas docs/onnx.md gives and nothing else:

    weights  wq = round(clamp(w / s_w, -2^(b-1), 2^(b-1) - 1)) * s_w
    inputs   xq = round(clamp(x / s_x, qmin, qmax)) * s_x
             qmin, qmax = -2^(b-1), 2^(b-1) - 1 when <layer>.input_signed,
                          0, 2^b - 1 otherwise

(round half to even, torch.round). The state_dict loads into the user's own
module with load_state_dict(strict=True) once limpq's entries (*_step,
*_bits, *_signed) are dropped.

    /usr/bin/python3 tests/tools/quantized_state_dict.py MODULE STATE_DICT INPUT.f32 N,C,H,W OUT.f32

MODULE is "torchvision:<name>" (built with num_classes=10),
"fixture:<name>" (export_onnx_models.build) or "<python module>:<class>"
importable from this folder. Writes the logits as
float32.
"""
import importlib
import sys

import torch

LIMPQ_SUFFIXES = ("_step", "_bits", "_signed")


def fake_quantize(x, step, qmin, qmax):
    return torch.round(torch.clamp(x / step, qmin, qmax)) * step


def quantized_module(model, state_dict):
    """Loads the state_dict (strict) and quantizes every layer it gives steps
    for, in place; returns the model."""
    model.load_state_dict({k: v for k, v in state_dict.items() if not k.endswith(LIMPQ_SUFFIXES)}, strict=True)
    modules = dict(model.named_modules())
    layers = sorted({k[:-len(".weight_bits")] for k in state_dict if k.endswith(".weight_bits")})
    with torch.no_grad():
        for name in layers:
            module = modules[name]
            b = int(state_dict[name + ".weight_bits"])
            step = state_dict[name + ".weight_step"]
            if step.numel() > 1:  # one step per output channel
                step = step.reshape([-1] + [1] * (module.weight.dim() - 1))
            module.weight.copy_(fake_quantize(module.weight, step, -2 ** (b - 1), 2 ** (b - 1) - 1))
            a = int(state_dict[name + ".act_bits"])
            signed = bool(state_dict[name + ".input_signed"])
            qmin, qmax = (-2 ** (a - 1), 2 ** (a - 1) - 1) if signed else (0, 2 ** a - 1)
            s = state_dict[name + ".input_step"]
            module.register_forward_pre_hook(
                lambda m, inputs, s=s, qmin=qmin, qmax=qmax: (fake_quantize(inputs[0], s, qmin, qmax),) + inputs[1:])
    return model


def build(spec):
    where, name = spec.split(":")
    if where == "torchvision":
        import torchvision
        return getattr(torchvision.models, name)(num_classes=10)
    if where == "fixture":  # a network of tests/tools/export_onnx_models.py
        return importlib.import_module("export_onnx_models").build(name)
    return getattr(importlib.import_module(where), name)()


def main():
    spec, state_dict_path, input_path, shape, out_path = sys.argv[1:6]
    dims = [int(d) for d in shape.split(",")]
    x = torch.from_file(input_path, size=torch.Size(dims).numel(), dtype=torch.float32).reshape(dims)
    model = quantized_module(build(spec), torch.load(state_dict_path)).eval()
    with torch.no_grad():
        model(x).contiguous().numpy().tofile(out_path)


if __name__ == "__main__":
    sys.exit(main())
