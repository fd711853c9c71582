#!/usr/bin/env python3
"""The accuracy study (issue 5): does limpq's policy beat the alternatives at
the same budget, do the indicators measure importance, and what does joint
training save over training each layer's indicators alone?

One command runs it end to end; every stage caches its result under --out
and is skipped when run again, so an interrupted study resumes where it
stopped (delete a stage's folder to redo it):

    bench/accuracy_study.py                       # the full study (about 1.5 h on 2 cores)
    bench/accuracy_study.py --seeds 0 1 2         # more fine-tuning seeds

Stages (folders under --out, default runs/study):
  fp/           the full-precision checkpoint (trained with
                configs/fashion_mnist_resnet20.yaml when --fp does not exist)
  indicators/   limpq's jointly trained indicators (limpq indicators)
  hessian.json  the Hessian-trace criterion (limpq sensitivity --method hessian)
  policies/     one policy per budget and method (limpq search; uniform ones written)
  finetune/     every distinct (policy, seed) fine-tuned with one shared recipe;
                recalibrated.json in each: its test accuracy after re-estimating
                batch-norm statistics over --bn-batches training batches
  layer_drop/   post-training accuracy with one layer at W2A2 (limpq eval --policy)
  one_at_a_time/ indicators of a few layers trained alone, one bit-width per run

Results: <out>/tables.md and CSVs (copied to bench/results/accuracy_study/).
Only the Python standard library is needed; the work is done by build/limpq.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path

from limpq_cli import Study as StudyBase, log

CANDIDATES = [6, 5, 4, 3, 2]
# Budgets: (name, search flags, uniform precision at that budget or None).
# With candidates down to 2 bits, W2A2-level BitOps admits only uniform W2A2
# (every layer at its minimum), so W2A3-level is the lowest budget with a
# choice; CR 12 is the size budget (CR 16 is below resnet20's all-2-bit floor
# of 15.86 with the fixed layers at 8 bits).
BUDGETS = [
    ("W2A2", ["--bitops", "W2A2"], "W2A2"),
    ("W2A3", ["--bitops", "W2A3"], "W2A3"),
    ("W3A3", ["--bitops", "W3A3"], "W3A3"),
    ("CR12", ["--cr", "12"], None),
]
RANDOM_SEEDS = [1, 2, 3]
# Layers whose indicators are also trained one at a time (spread over the
# network's three stages).
ONE_AT_A_TIME_LAYERS = ["layer1.0.conv1", "layer2.0.conv2", "layer3.0.conv1", "layer3.2.conv2"]


class Study(StudyBase):
    caller = "accuracy_study"

    def __init__(self, args):
        super().__init__(args)
        self.fp = args.fp
        self.data = ["--dataset", "fashion-mnist"]
        if args.test_limit:
            self.data += ["--test-limit", str(args.test_limit)]

    # --- helpers ----------------------------------------------------------

    def cached(self, path, make):
        """The JSON at path, or make() written there atomically."""
        path = Path(path)
        if path.exists():
            return json.loads(path.read_text())
        path.parent.mkdir(parents=True, exist_ok=True)
        value = make()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value, indent=1))
        os.replace(tmp, path)
        return value

    # --- stages -------------------------------------------------------------

    def full_precision(self):
        if not Path(self.fp).exists():
            fp_dir = self.out / "fp"
            self.run(["train", "--config", "configs/fashion_mnist_resnet20.yaml", "--out-dir", str(fp_dir),
                      "--resume", "--progress", "false", "--json"], self.out / "fp.log")
            self.fp = str(fp_dir / "checkpoint.pt")
        return self.cached(self.out / "fp_eval.json",
                           lambda: self.run(["eval", "--checkpoint", self.fp, *self.data, "--json"], self.out / "fp_eval.log"))

    def joint_indicators(self):
        d = self.out / "indicators"
        return self.cached(d / "result.json", lambda: self.run(
            ["indicators", "--weights", self.fp, *self.data, "--fraction", str(self.args.fraction), "--epochs", "1",
             "--out-dir", str(d), "--resume", "--progress", "false", "--json"], self.out / "indicators.log"))

    def hessian(self):
        return self.cached(self.out / "hessian_result.json", lambda: self.run(
            ["sensitivity", "--method", "hessian", "--weights", self.fp, *self.data, "--batches",
             str(self.args.hessian_batches), "--probes", str(self.args.hessian_probes), "--out",
             str(self.out / "hessian.json"), "--json"], self.out / "hessian.log"))

    def policies(self):
        """{budget: {method: policy path or 'uniform:WxAy'}}"""
        sources = {"limpq": (self.out / "indicators" / "indicators.json", []),
                   "hessian": (self.out / "hessian.json", ["--alpha", "1"])}
        for s in RANDOM_SEEDS:
            sources[f"random{s}"] = (self.out / "indicators" / "indicators.json", ["--random-objective", str(s)])
        table = {}
        for budget, flags, uniform in BUDGETS:
            table[budget] = {}
            for method, (indicators, extra) in sources.items():
                path = self.out / "policies" / budget / f"{method}.json"
                summary = self.cached(path.with_suffix(".search.json"), lambda: self.run(
                    ["search", "--indicators", str(indicators), *flags, *extra, "--out", str(path), "--json"],
                    self.out / "search.log"))
                table[budget][method] = {"policy": str(path), "search": summary}
            if uniform:
                # Written as a policy file so that identical policies share runs.
                w, a = (int(x) for x in uniform[1:].split("A"))
                policy = json.loads((self.out / "policies" / budget / "limpq.json").read_text())
                policy.pop("checksum", None)
                policy["layers"] = {l: {"weight_bits": w, "act_bits": a} for l in policy["layers"]}
                path = self.out / "policies" / budget / "uniform.json"
                path.write_text(json.dumps(policy, indent=1))
                table[budget]["uniform"] = {"policy": str(path), "search": None}
        return table

    def finetune(self, policy, seed):
        """Fine-tunes under a policy; runs of identical policies are shared."""
        content = json.loads(Path(policy).read_text())
        content.pop("checksum", None)
        recipe = [self.args.ft_epochs, self.args.ft_limit, self.args.test_limit]
        key = hashlib.sha256(json.dumps([content, recipe], sort_keys=True).encode()).hexdigest()[:12]
        d = self.out / "finetune" / f"{key}_s{seed}"
        return self.cached(d / "result.json", lambda: self.run(
            ["finetune", "--weights", self.fp, *self.data, "--policy", policy, "--epochs", str(self.args.ft_epochs),
             "--limit", str(self.args.ft_limit), "--lr", "0.01", "--seed", str(seed), "--out-dir", str(d),
             "--resume", "--progress", "false", "--json"], d.with_suffix(".log")))

    def recalibrated(self, finetuned):
        """Test accuracy of a fine-tuned checkpoint after batch-norm recalibration."""
        d = Path(finetuned["checkpoint"]).parent
        return self.cached(d / "recalibrated.json", lambda: self.run(
            ["eval", "--checkpoint", finetuned["checkpoint"], *self.data, "--bn-recalibration-batches",
             str(self.args.bn_batches), "--json"], d / "recalibrated.log"))

    def layer_drop(self, layers):
        """Top-1 with only `layer` at W2A2 (others full precision), no training."""
        results = {}
        d = self.out / "layer_drop"
        d.mkdir(parents=True, exist_ok=True)
        for name in layers:
            policy = d / f"{name}.json"
            if not policy.exists():
                base = json.loads((self.out / "policies" / "W2A2" / "limpq.json").read_text())
                base.pop("checksum", None)
                for l in base["layers"]:
                    base["layers"][l] = {"weight_bits": 2 if l == name else 32, "act_bits": 2 if l == name else 32}
                policy.write_text(json.dumps(base, indent=1))
            results[name] = self.cached(d / f"{name}.result.json", lambda: self.run(
                ["eval", "--checkpoint", self.fp, *self.data, "--policy", str(policy), "--json"], d / f"{name}.log"))
        return results

    def one_at_a_time(self):
        results = {}
        for name in ONE_AT_A_TIME_LAYERS:
            for b in CANDIDATES:
                d = self.out / "one_at_a_time" / f"{name}_{b}"
                results[(name, b)] = self.cached(d / "result.json", lambda: self.run(
                    ["indicators", "--weights", self.fp, *self.data, "--fraction", str(self.args.fraction),
                     "--epochs", "1", "--only-layer", name, "--candidates", str(b), "--test-limit", "1000",
                     "--out-dir", str(d), "--resume", "--progress", "false", "--json"], d.with_suffix(".log")))
        return results


# --- statistics ---------------------------------------------------------------

def ranks(values):
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den > 0 else float("nan")


def mean_spread(values):
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/study")
    p.add_argument("--limpq", default="build/limpq")
    p.add_argument("--fp", default="runs/fmnist_resnet20_fp/checkpoint.pt",
                   help="full-precision checkpoint (trained into <out>/fp when missing)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="fine-tuning seeds")
    p.add_argument("--fraction", type=float, default=0.25, help="indicator training: part of the training set")
    p.add_argument("--ft-epochs", type=int, default=1)
    p.add_argument("--ft-limit", type=int, default=10000, help="fine-tuning: training images (seeded subset)")
    p.add_argument("--hessian-batches", type=int, default=4)
    p.add_argument("--hessian-probes", type=int, default=32)
    p.add_argument("--bn-batches", type=int, default=50,
                   help="batch-norm recalibration: training batches (the recalibrated table)")
    p.add_argument("--test-limit", type=int, default=0, help="evaluate on this many test images (0: all 10k)")
    p.add_argument("--results", default="bench/results/accuracy_study", help="where the CSVs are copied")
    args = p.parse_args()

    study = Study(args)
    t0 = time.time()
    fp = study.full_precision()
    joint = study.joint_indicators()
    hess = study.hessian()
    policies = study.policies()

    # Fine-tuning: budgets in order of interest, each method and seed.
    finetuned = {}
    for budget, _, _ in [BUDGETS[1], BUDGETS[3], BUDGETS[2], BUDGETS[0]]:
        for method, entry in policies[budget].items():
            for seed in args.seeds:
                finetuned[(budget, method, seed)] = study.finetune(entry["policy"], seed)

    recalibrated = {k: study.recalibrated(v) for k, v in finetuned.items()}

    indicators = json.loads((study.out / "indicators" / "indicators.json").read_text())
    hessian = json.loads((study.out / "hessian.json").read_text())
    searchable = [l["name"] for l in indicators["layers"] if l["searchable"]]
    drops = study.layer_drop(searchable)
    alone = study.one_at_a_time()

    out = study.out
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    md = [f"FP top-1 {fp['top1']:.2f}% ({args.fp})", ""]

    # Table 1: accuracy per budget and method.
    header = ["budget", "method", "gbitops", "weight_kb", "avg_w_bits", "avg_a_bits", "seeds", "top1_mean",
              "top1_std", "top1_runs"]
    rows = []
    for budget, _, _ in BUDGETS:
        for method, entry in policies[budget].items():
            accs = [finetuned[(budget, method, s)]["test"]["top1"] for s in args.seeds]
            test = finetuned[(budget, method, args.seeds[0])]["test"]
            search = entry["search"]
            m, sd = mean_spread(accs)
            rows.append([budget, method, f"{test['bitops'] / 1e9:.4f}", f"{test['size_bytes'] / 1e3:.1f}",
                         f"{search['average_weight_bits']:.2f}" if search else "uniform",
                         f"{search['average_act_bits']:.2f}" if search else "uniform", len(accs), f"{m:.2f}",
                         f"{sd:.2f}", " ".join(f"{a:.2f}" for a in accs)])
        # The random policies together.
        accs = [finetuned[(budget, f"random{r}", s)]["test"]["top1"] for r in RANDOM_SEEDS for s in args.seeds]
        m, sd = mean_spread(accs)
        rows.append([budget, "random (all)", "", "", "", "", len(accs), f"{m:.2f}", f"{sd:.2f}", ""])
    write_csv(out / "accuracy.csv", header, rows)
    md += ["## Accuracy at equal budgets", "", md_table(header, rows), ""]

    # Table 1b: the same checkpoints after batch-norm recalibration.
    header = ["budget", "method", "seeds", "top1_mean", "top1_std", "top1_runs", "before_mean"]
    rows = []
    for budget, _, _ in BUDGETS:
        methods = [(m, [(m, s) for s in args.seeds]) for m in policies[budget]]
        methods.append(("random (all)", [(f"random{r}", s) for r in RANDOM_SEEDS for s in args.seeds]))
        for method, runs in methods:
            after = [recalibrated[(budget, m, s)]["top1"] for m, s in runs]
            before = [finetuned[(budget, m, s)]["test"]["top1"] for m, s in runs]
            m, sd = mean_spread(after)
            rows.append([budget, method, len(after), f"{m:.2f}", f"{sd:.2f}",
                         " ".join(f"{a:.2f}" for a in after) if len(after) <= 2 else "",
                         f"{statistics.mean(before):.2f}"])
    write_csv(out / "accuracy_bn_recalibrated.csv", header, rows)
    md += [f"## Accuracy after batch-norm recalibration ({args.bn_batches} batches)", "", md_table(header, rows), ""]

    # Table 2: per-layer 2-bit drop against the indicators' ranking.
    def score(ind, alpha, name, bits=2):
        layer = next(l for l in ind["layers"] if l["name"] == name)
        return alpha * layer["weight_steps"][str(bits)] + layer["act_steps"][str(bits)]

    header = ["layer", "top1_w2a2_only", "drop", "limpq_score", "hessian_score"]
    rows, drop_v, limpq_v, hess_v = [], [], [], []
    for name in searchable:
        d = fp["top1"] - drops[name]["top1"]
        ls, hs = score(indicators, 2.0, name), score(hessian, 1.0, name)
        drop_v.append(d), limpq_v.append(ls), hess_v.append(hs)
        rows.append([name, f"{drops[name]['top1']:.2f}", f"{d:.2f}", f"{ls:.5g}", f"{hs:.5g}"])
    write_csv(out / "layer_drop.csv", header, rows)
    rho_limpq, rho_hess = spearman(drop_v, limpq_v), spearman(drop_v, hess_v)
    md += ["## Per-layer 2-bit drop", "", md_table(header, rows), "",
           f"Spearman(drop, limpq indicator at 2 bits, alpha 2) = {rho_limpq:.3f}; "
           f"Spearman(drop, Hessian criterion at 2 bits) = {rho_hess:.3f}", ""]

    # Table 3: joint against one-at-a-time.
    header = ["layer", "bits", "joint_weight_step", "alone_weight_step", "joint_act_step", "alone_act_step",
              "alone_seconds"]
    rows, jw, aw, ja, aa, secs = [], [], [], [], [], []
    for name in ONE_AT_A_TIME_LAYERS:
        joint_layer = next(l for l in indicators["layers"] if l["name"] == name)
        for b in CANDIDATES:
            alone_ind = json.loads((out / "one_at_a_time" / f"{name}_{b}" / "indicators.json").read_text())
            alone_layer = next(l for l in alone_ind["layers"] if l["name"] == name)
            row = [joint_layer["weight_steps"][str(b)], alone_layer["weight_steps"][str(b)],
                   joint_layer["act_steps"][str(b)], alone_layer["act_steps"][str(b)]]
            jw.append(row[0]), aw.append(row[1]), ja.append(row[2]), aa.append(row[3])
            secs.append(alone[(name, b)]["seconds"])
            rows.append([name, b] + [f"{v:.5g}" for v in row] + [f"{secs[-1]:.1f}"])
    write_csv(out / "joint_vs_alone.csv", header, rows)
    per_run = statistics.mean(secs)
    all_runs = len(searchable) * len(CANDIDATES)
    per_bit = []
    for k, b in enumerate(CANDIDATES):
        idx = [i * len(CANDIDATES) + k for i in range(len(ONE_AT_A_TIME_LAYERS))]
        per_bit.append((b, spearman([jw[i] for i in idx], [aw[i] for i in idx]),
                        spearman([ja[i] for i in idx], [aa[i] for i in idx])))
    md += ["## Joint against one-at-a-time indicators", "", md_table(header, rows), "",
           f"Spearman over the {len(jw)} (layer, bits) points: weights {spearman(jw, aw):.3f}, "
           f"activations {spearman(ja, aa):.3f}; across the {len(ONE_AT_A_TIME_LAYERS)} layers at each bit-width "
           "(weights, activations): " + ", ".join(f"{b} bits {w:.2f}/{a:.2f}" for b, w, a in per_bit), "",
           f"Wall time: joint run {joint['seconds']:.0f} s for all {len(searchable)} layers x {len(CANDIDATES)} "
           f"bit-widths; one-at-a-time {per_run:.0f} s per run, {all_runs} runs = {all_runs * per_run:.0f} s "
           f"({all_runs * per_run / joint['seconds']:.1f}x the joint run)", ""]
    write_csv(out / "timing.csv", ["stage", "seconds"],
              [["joint_indicators", f"{joint['seconds']:.1f}"], ["hessian", f"{hess['seconds']:.1f}"],
               ["one_at_a_time_per_run", f"{per_run:.1f}"],
               ["one_at_a_time_all_layers_extrapolated", f"{all_runs * per_run:.1f}"],
               ["study_this_invocation", f"{time.time() - t0:.1f}"]])
    md += [f"Hessian criterion: {hess['seconds']:.0f} s ({args.hessian_batches} batches x {args.hessian_probes} "
           "probes)", ""]
    (out / "tables.md").write_text("\n".join(md) + "\n")
    for name in ["accuracy.csv", "accuracy_bn_recalibrated.csv", "layer_drop.csv", "joint_vs_alone.csv", "timing.csv", "tables.md"]:
        shutil.copy(out / name, results_dir / name)
    print("\n".join(md))


if __name__ == "__main__":
    main()
