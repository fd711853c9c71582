#!/usr/bin/python3
"""Networks brought as ONNX files through limpq (issue 31), measured:

  step     the training step of torchvision's resnet18 imported from ONNX
           against limpq's built-in resnet18 (same input, same recipe), full
           precision and W4A4 QAT, interleaved runs, median images/s
  pipeline `limpq run` at W3A3-level BitOps next to uniform W3A3 for
           torchvision's mobilenet_v3_small and resnet18 (exported with batch
           norm kept, opset 17) and the built-in resnet18, at --seeds; test
           top-1 with the spread over seeds
  eval     a network trained in PyTorch here, exported to ONNX, evaluated by
           PyTorch and by `limpq eval --onnx` on the same 10k test images

Fashion-MNIST is adapted to the networks' 3x32x32 input (data.channels 3,
data.image_size 32). The recipe is the quick start's (12k training images,
3 full-precision epochs at lr 0.1, indicators on a quarter of them for one
epoch, one fine-tuning epoch), fixed before any run: nothing here is tuned,
on the test set or otherwise. Each network's initial weights come from
torch.manual_seed(seed) (the built-in from limpq's seeded initialisation).

Every stage is cached under --out (a finished `limpq run` is reused), and the
tables are written to --results (committed).

    /usr/bin/python3 bench/onnx_study.py --stages step pipeline eval
"""

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = [("mobilenet_v3_small", "onnx"), ("resnet18", "onnx"), ("resnet18", "built-in")]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530  # limpq's Fashion-MNIST normalisation (src/data/datasets.cpp)


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def run(argv, log_path):
    log(" ".join(str(a) for a in argv))
    with open(log_path, "w") as err:
        proc = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"onnx_study: {argv[0]} failed ({proc.returncode}); see {log_path}")
    return proc.stdout


def export(name, seed, path, side=32):
    """torchvision's `name` (10 classes), initialised from `seed`, exported in
    eval() with batch norm kept and a dynamic batch axis."""
    if path.exists():
        return path
    import torch
    import torchvision
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    torch.onnx.export(model, torch.randn(1, 3, side, side), str(path), opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return path


def model_flags(network, kind, seed, out):
    if kind == "built-in":
        return ["--arch", network]
    return ["--onnx", export(network, seed, out / f"{network}_seed{seed}.onnx")]


# --- step time --------------------------------------------------------------

def images_per_second(stdout_log):
    for line in Path(stdout_log).read_text().splitlines():
        if "img/s" in line:
            return float(line.split("img/s")[0].split("|")[-1].strip())
    raise ValueError(f"no img/s in {stdout_log}")


def stage_step(args, out):
    """Interleaved: imported, built-in, imported, ... one epoch of --step-images
    each; the median images/s of --repeats runs per side."""
    common = ["--channels", "3", "--image-size", "32", "--epochs", "1", "--limit", str(args.step_images),
              "--test-limit", "256", "--threads", "2"]
    results = {}
    fp = {}
    for kind in ("onnx", "built-in"):
        d = out / f"step_fp_{kind}"
        if not (d / "checkpoint.pt").exists():
            run([args.limpq, "train", *model_flags("resnet18", kind, 0, out), *common, "--out-dir", d],
                out / f"step_fp_{kind}.log")
        fp[kind] = d / "checkpoint.pt"
    for mode in ("fp", "W4A4"):
        samples = {"onnx": [], "built-in": []}
        for r in range(args.repeats):
            for kind in ("onnx", "built-in"):
                d = out / f"step_{mode}_{kind}_{r}"
                log_path = out / f"step_{mode}_{kind}_{r}.log"
                if mode == "fp":
                    argv = [args.limpq, "train", *model_flags("resnet18", kind, 0, out), *common]
                else:
                    argv = [args.limpq, "finetune", *model_flags("resnet18", kind, 0, out), "--weights", fp[kind],
                            "--uniform", "W4A4", "--bn-recalibration-batches", "0", *common]
                subprocess.run(["rm", "-rf", str(d)])
                run(argv + ["--out-dir", d], log_path)
                samples[kind].append(images_per_second(log_path))
        results[mode] = {k: {"median": statistics.median(v), "runs": v} for k, v in samples.items()}
    lines = ["| step (resnet18, 3x32x32, batch 128) | imported from ONNX img/s | built-in img/s | imported / built-in |",
             "|---|---|---|---|"]
    for mode, r in results.items():
        a, b = r["onnx"]["median"], r["built-in"]["median"]
        lines.append(f"| {'full precision' if mode == 'fp' else 'QAT ' + mode} | {a:.0f} ({', '.join(f'{x:.0f}' for x in r['onnx']['runs'])}) "
                     f"| {b:.0f} ({', '.join(f'{x:.0f}' for x in r['built-in']['runs'])}) | {a / b:.3f} |")
    write_results(args, "step_time", results, lines)


# --- pipeline ---------------------------------------------------------------

CONFIG = """data:
  dataset: fashion-mnist
  limit: 12000
  channels: 3
  image_size: 32
model:
{model}
train:
  epochs: 3
  lr: 0.1
  warmup_epochs: 0.5
indicators:
  candidates: [6, 5, 4, 3, 2]
  fraction: 0.25
  epochs: 1
search:
  bitops: W3A3
finetune:
  epochs: 1
run:
  out_dir: {out_dir}
  seed: {seed}
"""


def stage_pipeline(args, out):
    """Each (network, seed) run once: a row already in the committed results
    (--results/pipeline.json) is kept as it is, so a study interrupted on one
    machine continues on another."""
    committed = args.results / "pipeline.json"
    done = {}
    if committed.exists():
        for r in json.loads(committed.read_text()):
            done[(r["network"], r["kind"], r["seed"])] = r
    rows = []
    for network, kind in NETWORKS:
        for seed in args.seeds:
            if (network, kind, seed) in done:
                rows.append(done[(network, kind, seed)])
                continue
            name = f"{network}_{kind}_seed{seed}"
            run_dir = out / name
            if not (run_dir / "summary.json").exists():
                flags = model_flags(network, kind, seed, out)
                model = f"  {flags[0][2:]}: {flags[1]}"
                config = out / f"{name}.yaml"
                config.write_text(CONFIG.format(model=model, out_dir=run_dir, seed=seed))
                run([args.limpq, "run", config], out / f"{name}.log")
            summary = {r["name"]: r for r in json.loads((run_dir / "summary.json").read_text())}
            # The full-precision checkpoint also with its batch-norm statistics
            # re-estimated (50 batches), as the fine-tuned ones are: networks
            # whose batch norms use a small momentum (mobilenet_v3's 0.01) end
            # a short run with running statistics still near their start.
            fp_bn = run_dir / "fp_bn_recalibrated.json"
            if not fp_bn.exists():
                stdout = run([args.limpq, "eval", "--checkpoint", run_dir / "fp" / "checkpoint.pt",
                              "--bn-recalibration-batches", "50", "--json"], out / f"{name}_fp_bn.log")
                fp_bn.write_text([l for l in stdout.splitlines() if l.startswith("{")][-1] + "\n")
            rows.append({"network": network, "kind": kind, "seed": seed,
                         "fp": summary["full precision"]["top1"],
                         "fp_bn": json.loads(fp_bn.read_text())["top1"],
                         "uniform": summary["uniform W3A3"]["top1"],
                         "limpq": summary["limpq policy"]["top1"],
                         "uniform_bitops": summary["uniform W3A3"]["bitops"],
                         "limpq_bitops": summary["limpq policy"]["bitops"]})
            write_pipeline(args, rows)


def mean_sd(values):
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def write_pipeline(args, rows):
    lines = ["| network | seeds | full precision | full precision, BN re-estimated | uniform W3A3 | "
             "limpq policy (W3A3-level BitOps) | policy - uniform |",
             "|---|---|---|---|---|---|---|"]
    for network, kind in NETWORKS:
        rs = [r for r in rows if r["network"] == network and r["kind"] == kind]
        if not rs:
            continue
        diffs = [r["limpq"] - r["uniform"] for r in rs]
        lines.append(f"| {network} ({'imported from ONNX' if kind == 'onnx' else 'built-in'}) | "
                     f"{', '.join(str(r['seed']) for r in rs)} | {mean_sd([r['fp'] for r in rs])} | "
                     f"{mean_sd([r['fp_bn'] for r in rs])} | "
                     f"{mean_sd([r['uniform'] for r in rs])} | {mean_sd([r['limpq'] for r in rs])} | "
                     f"{mean_sd(diffs)} |")
    write_results(args, "pipeline", rows, lines)


# --- eval parity ------------------------------------------------------------

def read_idx(path):
    import numpy as np
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def stage_eval(args, out):
    """mobilenet_v3_small trained in PyTorch for --eval-steps on the Fashion-MNIST
    training images (gray replicated to 3 channels, 28x28: no resize, so both
    sides see the same pixels), then top-1 on the 10k test images in PyTorch
    and in `limpq eval --onnx`."""
    import numpy as np
    import torch
    import torchvision
    path = out / "eval_mobilenet_v3_small.onnx"
    result_path = out / "eval_pytorch.json"
    if not result_path.exists():
        torch.manual_seed(0)
        torch.set_num_threads(2)
        prep = lambda x: ((torch.from_numpy(x).float() / 255 - MEAN) / STD).unsqueeze(1).expand(-1, 3, -1, -1)
        train_x = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
        train_y = torch.from_numpy(read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz").astype(np.int64))
        test_x = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
        test_y = torch.from_numpy(read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
        model = torchvision.models.mobilenet_v3_small(num_classes=10)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        model.train()
        for step in range(args.eval_steps):
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
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
        result_path.write_text(json.dumps({"top1": 100.0 * correct / len(test_y), "steps": args.eval_steps}))
    pytorch = json.loads(result_path.read_text())
    stdout = run([args.limpq, "eval", "--onnx", path, "--json"], out / "eval_limpq.log")
    limpq = json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])
    results = {"pytorch_top1": pytorch["top1"], "limpq_top1": limpq["top1"], "images": limpq["count"],
               "pytorch_steps": pytorch["steps"]}
    lines = ["| mobilenet_v3_small trained in PyTorch | PyTorch top-1 | limpq eval --onnx top-1 | difference |",
             "|---|---|---|---|",
             f"| {pytorch['steps']} steps, 10k test images | {pytorch['top1']:.2f}% | {limpq['top1']:.2f}% | "
             f"{limpq['top1'] - pytorch['top1']:+.2f} |"]
    write_results(args, "eval", results, lines)


def write_results(args, name, data, lines):
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.results / f"{name}.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {args.results / name}.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limpq", type=Path, default=ROOT / "build" / "limpq")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "onnx_study")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "onnx_study")
    parser.add_argument("--stages", nargs="+", default=["step", "pipeline", "eval"],
                        choices=["step", "pipeline", "eval"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="step-time runs per side")
    parser.add_argument("--step-images", type=int, default=5120, help="images per step-time run")
    parser.add_argument("--eval-steps", type=int, default=600, help="PyTorch training steps of the eval check")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    for stage in args.stages:
        {"step": stage_step, "pipeline": stage_pipeline, "eval": stage_eval}[stage](args, args.out)


if __name__ == "__main__":
    import warnings
    warnings.filterwarnings("ignore")
    main()
