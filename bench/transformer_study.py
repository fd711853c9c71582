#!/usr/bin/python3
"""A vision transformer and a ConvNeXt brought as ONNX files through limpq, measured:

  recipe   the full-precision learning rate of each network, chosen on a
           validation split (5,000 of the training images held out) from
           --lrs; the test set is not read
  pipeline `limpq run` at W4A4- and W3A3-level BitOps next to uniform
           precision at the same level, at --seeds, with the recipe above;
           test top-1 with the spread over seeds, and what the learned
           indicators say about the attention products, the MLPs and the
           patch embedding
  eval     small ViT, Swin and ConvNeXt configurations trained briefly in
           PyTorch, exported at opset 17, evaluated by PyTorch and by
           `limpq eval --onnx` on the 10k test images
  step     the imported ViT's training step (full precision and W4A4 QAT)
           on one fixed batch (build/bench/limpq_bench's onnx rows) against
           the same model in PyTorch eager (full precision, and the LSQ fake
           quantizer written in PyTorch Python)

The networks, exported untrained from torchvision at opset 17 for a
3x28x28 input (Fashion-MNIST's gray copied to three channels, as
configs/fashion_mnist_vit_pipeline.yaml does; torch.manual_seed(seed)
initialises them):

  vit      DeiT-tiny-shaped VisionTransformer: patch 7 (16 tokens and the
           class token), 4 blocks, width 192, 3 heads, MLP 768
  convnext ConvNeXt-atto-shaped: widths 40-80-160-320, depths 2-2-4-2 (atto
           has 2-2-6-2), 4x4 patchify stem, on 32x32 (resized)

Every stage is cached under --out (a finished `limpq run` is reused, and a
row already in --results is kept), and the tables are written to --results
(committed).

    /usr/bin/python3 bench/transformer_study.py --stages recipe pipeline step
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ("vit", "convnext")
# Input side: the ViT's 7x7 patches tile 28x28; ConvNeXt's stem and three
# downsamplings (4 x 2 x 2 x 2) need 32.
SIDE = {"vit": 28, "convnext": 32}
LEVELS = ("W3A3", "W4A4")


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def run(argv, log_path):
    log(" ".join(str(a) for a in argv))
    with open(log_path, "w") as err:
        proc = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"transformer_study: {argv[0]} failed ({proc.returncode}); see {log_path}")
    return proc.stdout


def build(name):
    import torch
    if name == "vit":
        from torchvision.models.vision_transformer import VisionTransformer
        return VisionTransformer(image_size=28, patch_size=7, num_layers=4, num_heads=3, hidden_dim=192,
                                 mlp_dim=768, num_classes=10)
    if name == "convnext":
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt
        blocks = [CNBlockConfig(40, 80, 2), CNBlockConfig(80, 160, 2), CNBlockConfig(160, 320, 4),
                  CNBlockConfig(320, None, 2)]
        return ConvNeXt(blocks, stochastic_depth_prob=0.0, num_classes=10)
    raise ValueError(name)


def export(name, seed, out):
    path = out / f"{name}_seed{seed}.onnx"
    if path.exists():
        return path
    import torch
    torch.manual_seed(seed)
    model = build(name).eval()
    torch.onnx.export(model, torch.randn(1, 3, SIDE[name], SIDE[name]), str(path), opset_version=17,
                      input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return path


# --- recipe (validation split only) -----------------------------------------

def stage_recipe(args, out):
    """Each lr of --lrs: --fp-epochs of full-precision training on the training
    images less 5,000 held out, top-1 on those 5,000. The best lr is the
    recipe of the pipeline stage."""
    path = args.results / "recipe.json"
    chosen = json.loads(path.read_text()) if path.exists() else {}
    for name in args.networks:
        scores = chosen.get(name, {}).get("val_top1", {})
        for lr in args.lrs:
            key = f"{lr:g}"
            if key in scores:
                continue
            d = out / f"recipe_{name}_lr{key}"
            subprocess.run(["rm", "-rf", str(d)])
            # Evaluated on the validation images at every epoch; the test
            # images the run ends on (256, --test-limit) are not read here.
            run([args.limpq, "train", "--onnx", export(name, 0, out), "--channels", 3, "--image-size", SIDE[name],
                 "--limit", args.limit,
                 "--val-size", 5000,
                 "--epochs", args.fp_epochs, "--lr", lr, "--warmup-epochs", 0.5, "--test-limit", 256,
                 "--threads", 2, "--out-dir", d], out / f"recipe_{name}_lr{key}.log")
            metrics = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if l.strip()]
            scores[key] = [m for m in metrics if "val" in m][-1]["val"]["top1"]
            chosen[name] = {"val_top1": scores, "lr": float(max(scores, key=scores.get))}
            write_results(args, "recipe", chosen, recipe_lines(chosen))


def recipe_lines(chosen):
    lines = ["| network | validation top-1 by full-precision lr | chosen lr |", "|---|---|---|"]
    for name, r in chosen.items():
        cells = ", ".join(f"{lr}: {top1:.2f}%" for lr, top1 in r["val_top1"].items())
        lines.append(f"| {name} | {cells} | {r['lr']:g} |")
    return lines


# --- pipeline ---------------------------------------------------------------

CONFIG = """data:
  dataset: fashion-mnist
  limit: {limit}
  channels: 3
  image_size: {side}
model:
  onnx: {onnx}
train:
  epochs: {fp_epochs}
  lr: {lr}
  warmup_epochs: 0.5
indicators:
  candidates: [6, 5, 4, 3, 2]
  fraction: 0.25
  epochs: 1
search:
  bitops: {level}
finetune:
  epochs: {ft_epochs}
  lr: {ft_lr}
run:
  out_dir: {out_dir}
  seed: {seed}
"""


def stage_pipeline(args, out):
    recipe = json.loads((args.results / "recipe.json").read_text())
    committed = args.results / "pipeline.json"
    rows = json.loads(committed.read_text()) if committed.exists() else []
    done = {(r["network"], r["level"], r["seed"]) for r in rows}
    for seed in args.seeds:
        for name in args.networks:
            for level in LEVELS:
                if (name, level, seed) in done:
                    continue
                tag = f"{name}_{level}_seed{seed}"
                run_dir = out / tag
                if not (run_dir / "summary.json").exists():
                    config = out / f"{tag}.yaml"
                    config.write_text(CONFIG.format(limit=args.limit, side=SIDE[name], onnx=export(name, seed, out),
                                                    fp_epochs=args.fp_epochs, lr=recipe[name]["lr"], level=level,
                                                    ft_epochs=args.ft_epochs, ft_lr=recipe[name]["lr"] / 10,
                                                    out_dir=run_dir, seed=seed))
                    run([args.limpq, "run", config], out / f"{tag}.log")
                summary = {r["name"]: r for r in json.loads((run_dir / "summary.json").read_text())}
                rows.append({"network": name, "level": level, "seed": seed,
                             "fp": summary["full precision"]["top1"],
                             "uniform": summary[f"uniform {level}"]["top1"],
                             "limpq": summary["limpq policy"]["top1"],
                             "uniform_bitops": summary[f"uniform {level}"]["bitops"],
                             "limpq_bitops": summary["limpq policy"]["bitops"],
                             "groups": layer_groups(run_dir)})
                write_results(args, "pipeline", rows, pipeline_lines(rows))


def group_of(layer):
    """The layer's group by its PyTorch module path (torchvision's
    VisionTransformer and ConvNeXt names)."""
    if "matmul" in layer:
        return "attention products"
    if "mlp" in layer or ".block.3" in layer or ".block.5" in layer:
        return "MLP"
    if ".block.0" in layer:
        return "depthwise conv"
    if "conv_proj" in layer or layer.startswith("features.0."):
        return "patch embedding"
    if re.fullmatch(r"features\.\d+\.1", layer):
        return "downsampling"
    if "self_attention" in layer:
        return "attention projections"
    if layer.startswith("heads") or layer.startswith("classifier"):
        return "head"
    return "other"


def layer_groups(run_dir):
    """Mean weight and activation bits of the policy per layer group."""
    policy = json.loads((run_dir / "policy.json").read_text())
    groups = {}
    for layer, bits in policy["layers"].items():
        g = groups.setdefault(group_of(layer), {"layers": 0, "weight_bits": 0.0, "act_bits": 0.0})
        g["layers"] += 1
        g["weight_bits"] += bits["weight_bits"]
        g["act_bits"] += bits["act_bits"]
    for g in groups.values():
        g["weight_bits"] /= g["layers"]
        g["act_bits"] /= g["layers"]
    return groups


def mean_sd(values):
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def pipeline_lines(rows):
    lines = ["| network | BitOps level | seeds | full precision | uniform | limpq policy | policy - uniform |",
             "|---|---|---|---|---|---|---|"]
    for name in NETWORKS:
        for level in LEVELS:
            rs = [r for r in rows if r["network"] == name and r["level"] == level]
            if not rs:
                continue
            lines.append(f"| {name} | {level} | {', '.join(str(r['seed']) for r in rs)} | "
                         f"{mean_sd([r['fp'] for r in rs])} | {mean_sd([r['uniform'] for r in rs])} | "
                         f"{mean_sd([r['limpq'] for r in rs])} | {mean_sd([r['limpq'] - r['uniform'] for r in rs])} |")
    lines += ["", "Mean bits of the searched policies by layer group (weights / activations), over seeds:", "",
              "| network | level | group | layers | weight bits | activation bits |", "|---|---|---|---|---|---|"]
    for name in NETWORKS:
        for level in LEVELS:
            rs = [r for r in rows if r["network"] == name and r["level"] == level]
            for group in sorted({g for r in rs for g in r["groups"]}):
                gs = [r["groups"][group] for r in rs if group in r["groups"]]
                lines.append(f"| {name} | {level} | {group} | {gs[0]['layers']} | "
                             f"{statistics.mean(g['weight_bits'] for g in gs):.2f} | "
                             f"{statistics.mean(g['act_bits'] for g in gs):.2f} |")
    return lines


# --- eval parity ------------------------------------------------------------

MEAN, STD = 0.2860, 0.3530  # limpq's Fashion-MNIST normalisation (src/data/datasets.cpp)


def build_small(name):
    """Small configurations, other than the study's networks and the test
    fixtures, for a 3x28x28 input."""
    import torch
    if name == "vit":
        from torchvision.models.vision_transformer import VisionTransformer
        return VisionTransformer(image_size=28, patch_size=4, num_layers=3, num_heads=4, hidden_dim=64, mlp_dim=128,
                                 num_classes=10)
    if name == "swin":
        from torchvision.models.swin_transformer import SwinTransformer
        return SwinTransformer(patch_size=[2, 2], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[7, 7],
                               num_classes=10)
    if name == "convnext":
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt
        return ConvNeXt([CNBlockConfig(32, 64, 2), CNBlockConfig(64, None, 2)], num_classes=10)
    raise ValueError(name)


def stage_eval(args, out):
    """Each network trained --eval-steps SGD steps (batch 128, lr 0.01,
    momentum 0.9) in PyTorch, then top-1 on the 10k test images in PyTorch
    and in `limpq eval --onnx`."""
    import numpy as np
    import torch
    sys.path.insert(0, str(ROOT / "bench"))
    from onnx_study import FASHION_MNIST, read_idx
    torch.set_num_threads(2)
    # Gray copied to 3 channels at 28x28: the pixels limpq feeds a 3x28x28 file.
    prep = lambda x: ((torch.from_numpy(np.ascontiguousarray(x)).float() / 255 - MEAN) / STD).unsqueeze(1).expand(
        -1, 3, -1, -1)
    train_x = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    train_y = torch.from_numpy(read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz").astype(np.int64))
    test_x = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    test_y = torch.from_numpy(read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    rows = []
    for name in ("vit", "swin", "convnext"):
        path = out / f"eval_{name}.onnx"
        result_path = out / f"eval_{name}_pytorch.json"
        if not result_path.exists():
            torch.manual_seed(0)
            model = build_small(name)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            model.train()
            for _ in range(args.eval_steps):
                idx = torch.randint(0, len(train_y), (128,))
                loss = torch.nn.functional.cross_entropy(model(prep(train_x[idx.numpy()])), train_y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for i in range(0, len(test_y), 500):
                    correct += (model(prep(test_x[i:i + 500])).argmax(1) == test_y[i:i + 500]).sum().item()
            torch.onnx.export(model, prep(test_x[:1]), str(path), opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=False)
            result_path.write_text(json.dumps({"top1": 100.0 * correct / len(test_y), "steps": args.eval_steps}))
        pytorch = json.loads(result_path.read_text())
        stdout = run([args.limpq, "eval", "--onnx", path, "--json"], out / f"eval_{name}_limpq.log")
        limpq = json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])
        rows.append({"network": name, "steps": pytorch["steps"], "pytorch_top1": pytorch["top1"],
                     "limpq_top1": limpq["top1"], "images": limpq["count"]})
    lines = ["| trained in PyTorch (opset 17) | steps | PyTorch top-1 | limpq eval --onnx top-1 | difference |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['steps']} | {r['pytorch_top1']:.2f}% | {r['limpq_top1']:.2f}% | "
                     f"{r['limpq_top1'] - r['pytorch_top1']:+.2f} |")
    write_results(args, "eval", rows, lines)


# --- step time --------------------------------------------------------------

def pytorch_step(mode, images, batch=128):
    """Images/s of the ViT's training step in PyTorch eager: SGD, cross
    entropy, full precision or W4A4 with every conv and linear weight and
    input fake-quantized by LSQ written in Python (attach_python_lsq). The
    attention products stay in full precision on this side: torchvision's
    attention computes them inside F.multi_head_attention_forward, out of
    Python's reach; limpq quantizes them too."""
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build("vit")
    if mode == "W4A4":
        attach_python_lsq(model, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 28, 28)
    y = torch.randint(0, 10, (batch,))
    model.train()

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    steps = max(1, images // batch)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


class PythonLsq:
    """LSQ in PyTorch Python (Esser et al.): the step's gradient scaled by
    1/sqrt(numel * qmax), round with a straight-through gradient."""

    def __init__(self, bits, signed):
        self.qmin, self.qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)

    def __call__(self, x, step):
        import torch
        g = 1.0 / (x.numel() * self.qmax) ** 0.5
        s = step * g + (step - step * g).detach()
        q = torch.clamp(x / s, self.qmin, self.qmax)
        return ((q.round() - q).detach() + q) * s


def attach_python_lsq(model, bits):
    """Every conv and linear weight (the attention's packed in_proj too)
    through an LSQ parametrization, and every such layer's input (the
    attention's: ln_1's output) through LSQ."""
    import torch
    from torch.nn.utils import parametrize

    class WeightLsq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.step = torch.nn.Parameter(torch.tensor(0.01))
            self.lsq = PythonLsq(bits, signed=True)

        def forward(self, w):
            return self.lsq(w, self.step)

    def input_lsq(module):
        module.input_step = torch.nn.Parameter(torch.tensor(0.1))
        lsq = PythonLsq(bits, signed=True)
        module.register_forward_pre_hook(lambda m, inputs: (lsq(inputs[0], m.input_step),) + inputs[1:])

    def output_lsq(module):
        module.output_step = torch.nn.Parameter(torch.tensor(0.1))
        lsq = PythonLsq(bits, signed=True)
        module.register_forward_hook(lambda m, inputs, output: lsq(output, m.output_step))

    for module in list(model.modules()):
        if isinstance(module, torch.nn.MultiheadAttention):
            parametrize.register_parametrization(module, "in_proj_weight", WeightLsq())
        elif hasattr(module, "ln_1") and hasattr(module, "self_attention"):
            # torchvision's EncoderBlock calls its attention with keywords,
            # which a forward pre-hook does not see: the attention's input
            # is quantized as ln_1's output instead.
            output_lsq(module.ln_1)
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            parametrize.register_parametrization(module, "weight", WeightLsq())
            input_lsq(module)


def bench_step(args, onnx, row):
    """Images/s of limpq_bench's TrainStep/<row> on the imported network: one
    fixed batch of 128, as pytorch_step measures PyTorch."""
    proc = subprocess.run([str(args.bench), f"--benchmark_filter=TrainStep/{row}/", "--benchmark_format=json"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True,
                          env={**os.environ, "LIMPQ_THREADS": "2", "LIMPQ_BENCH_ONNX": str(onnx)})
    (bench,) = json.loads(proc.stdout)["benchmarks"]
    return bench["images_per_second"]


def stage_step(args, out):
    """Interleaved: limpq, PyTorch, limpq, ... --repeats runs per side, each
    the training step on one fixed batch of 128 (limpq_bench's onnx rows,
    channels-last as limpq trains by default, and NCHW); median images/s."""
    onnx = export("vit", 0, out)
    results = {}
    for mode in ("fp32", "W4A4"):
        samples = {"limpq": [], "limpq_nchw": [], "pytorch": []}
        for r in range(args.repeats):
            samples["limpq"].append(bench_step(args, onnx, f"onnx_{mode}"))
            samples["pytorch"].append(pytorch_step(mode, args.step_images))
            samples["limpq_nchw"].append(bench_step(args, onnx, f"onnx_{mode}_nchw"))
            log(f"{mode}: limpq {samples['limpq'][-1]:.0f} img/s (NCHW {samples['limpq_nchw'][-1]:.0f}), "
                f"PyTorch {samples['pytorch'][-1]:.0f} img/s")
        results[mode] = {k: {"median": statistics.median(v), "runs": v} for k, v in samples.items()}
    lines = ["| ViT training step (batch 128, 3x28x28) | limpq img/s | limpq NCHW img/s | PyTorch eager img/s | "
             "limpq / PyTorch |", "|---|---|---|---|---|"]
    cell = lambda r: f"{r['median']:.0f} ({', '.join(f'{x:.0f}' for x in r['runs'])})"
    for mode, r in results.items():
        lines.append(f"| {'full precision' if mode == 'fp32' else 'QAT ' + mode} | {cell(r['limpq'])} | "
                     f"{cell(r['limpq_nchw'])} | {cell(r['pytorch'])} | "
                     f"{r['limpq']['median'] / r['pytorch']['median']:.2f} (NCHW "
                     f"{r['limpq_nchw']['median'] / r['pytorch']['median']:.2f}) |")
    write_results(args, "step_time", results, lines)


def write_results(args, name, data, lines):
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.results / f"{name}.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {args.results / name}.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limpq", type=Path, default=ROOT / "build" / "limpq")
    parser.add_argument("--bench", type=Path, default=ROOT / "build" / "bench" / "limpq_bench")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transformer_study")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "transformer_study")
    parser.add_argument("--stages", nargs="+", default=["recipe", "pipeline", "step"],
                        choices=["recipe", "pipeline", "step", "eval"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--limit", type=int, default=12000, help="training images of every stage")
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.1, 0.03, 0.01])
    parser.add_argument("--fp-epochs", type=int, default=5)
    parser.add_argument("--ft-epochs", type=int, default=2)
    parser.add_argument("--eval-steps", type=int, default=400, help="PyTorch training steps of the eval check")
    parser.add_argument("--repeats", type=int, default=3, help="step-time runs per side")
    parser.add_argument("--step-images", type=int, default=2560, help="images per step-time run")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    for stage in args.stages:
        {"recipe": stage_recipe, "pipeline": stage_pipeline, "step": stage_step, "eval": stage_eval}[stage](args, args.out)


if __name__ == "__main__":
    import warnings
    warnings.filterwarnings("ignore")
    main()
