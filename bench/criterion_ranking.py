#!/usr/bin/env python3
"""Which criterion ranks layers the way the network behaves?

Every criterion is compared (limpq compare-indicators: Spearman and Kendall
across layers) with the measured single-layer sensitivity on held-out data
(limpq sensitivity --method drop). The criteria: the forms of the learned
indicators (step, the paper's; relative; noise; fisher), from joint runs of
several lengths (the curve of agreement against indicator-training length),
and the Hessian criterion as a baseline.

Everything is measured on the validation split (--val-size examples held out
of the training set by the seed, never seen by the full-precision training
when it ran with the same --val-size and seed); the test set is not touched.
Every stage caches its output under --out and is skipped when run again, so
an interrupted study resumes where it stopped:

    bench/criterion_ranking.py --fp runs/rank/fp/checkpoint.pt
    bench/criterion_ranking.py --lengths 0.25x1 0.5x3 1x5    # fraction x epochs

Results: <out>/ranking.csv and ranking.md (copied to --results).
Only the Python standard library is needed; the work is done by build/limpq.
"""

import argparse
import csv
import json
import shutil
from pathlib import Path

from limpq_cli import Study as StudyBase, log

CRITERIA = ["step", "relative", "noise", "fisher", "fisher-error"]


class Study(StudyBase):
    caller = "criterion_ranking"

    def __init__(self, args):
        super().__init__(args)
        self.data = ["--dataset", args.dataset, "--val-size", str(args.val_size)]
        self.model = ["--arch", args.arch]

    def full_precision(self):
        fp = Path(self.args.fp) if self.args.fp else self.out / "fp" / "checkpoint.pt"
        if not fp.exists():
            self.run(["train", "--config", self.args.fp_config, *self.data, "--out-dir", str(fp.parent), "--resume",
                      "--progress", "false", "--json"], self.out / "fp.log")
        return str(fp)

    def drop(self, fp):
        path = self.out / "drop.json"
        if not path.exists():
            self.run(["sensitivity", "--method", "drop", "--weights", fp, *self.model, *self.data, "--bn-batches",
                      str(self.args.bn_batches), "--out", str(path), "--json"], self.out / "drop.log")
        return path

    def hessian(self, fp):
        path = self.out / "hessian.json"
        if not path.exists():
            self.run(["sensitivity", "--method", "hessian", "--weights", fp, *self.model, *self.data, "--batches", "4",
                      "--probes", "32", "--out", str(path), "--json"], self.out / "hessian.log")
        return path

    def indicators(self, fp, fraction, epochs):
        d = self.out / f"indicators_f{fraction}_e{epochs}"
        path = d / "indicators.json"
        if not path.exists():
            self.run(["indicators", "--weights", fp, *self.model, *self.data, "--fraction", str(fraction), "--epochs",
                      str(epochs), "--out-dir", str(d), "--resume", "--progress", "false", "--json"],
                     self.out / f"{d.name}.log")
        return path

    def compare(self, a, b, criterion, alpha=None):
        key = f"{Path(a).parent.name}_{Path(a).stem}_{criterion}_vs_{Path(b).stem}"
        if alpha is not None:
            key += f"_alpha{alpha:g}"
        cache = self.out / "compare" / f"{key}.json"
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            argv = ["compare-indicators", str(a), str(b), "--criterion-a", criterion, "--json"]
            if alpha is not None:
                argv += ["--alpha-a", f"{alpha:g}"]
            result = self.run(argv, self.out / "compare.log")
            cache.write_text(json.dumps(result))
        return json.loads(cache.read_text())


def row_of(name, steps, comparison):
    by_bits = {r["bits"]: r for r in comparison["per_bits"]}
    low = by_bits[min(by_bits)]
    return {
        "criterion": name,
        "joint_steps": steps,
        "alpha": comparison["alpha_a"],
        "rho_weights_mean": comparison["mean"]["weights"]["spearman"],
        "rho_acts_mean": comparison["mean"]["acts"]["spearman"],
        "rho_combined_mean": comparison["mean"]["combined"]["spearman"],
        "rho_combined_lowest_bits": low["combined"]["spearman"],
        "tau_combined_mean": comparison["mean"]["combined"]["kendall"],
        "rho_combined_pooled": comparison["pooled"]["combined"]["spearman"],
    }


def fmt(v):
    return "" if v is None else (f"{v:+.3f}" if isinstance(v, float) else str(v))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/criterion_ranking")
    p.add_argument("--results", default="bench/results/criterion_ranking")
    p.add_argument("--limpq", default="build/limpq")
    p.add_argument("--fp", default="", help="full-precision checkpoint (default: trained under --out)")
    p.add_argument("--fp-config", default="configs/fashion_mnist_resnet20.yaml")
    p.add_argument("--arch", default="resnet20", help="the network of --fp / --fp-config")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--bn-batches", type=int, default=20)
    p.add_argument("--lengths", nargs="+", default=["0.25x1"], help="joint runs as FRACTIONxEPOCHS")
    p.add_argument("--no-hessian", action="store_true")
    p.add_argument("--alphas", nargs="+", type=float, default=[0.25, 0.5, 1, 2, 4, 8],
                   help="alphas of the combined score I_a + alpha I_w swept for every criterion (alpha.csv)")
    args = p.parse_args()

    study = Study(args)
    fp = study.full_precision()
    for length in args.lengths:  # the joint runs first: they are the method, the drop only measures it
        fraction, epochs = length.split("x")
        study.indicators(fp, float(fraction), int(epochs))
    drop = study.drop(fp)
    rows = []
    for length in args.lengths:
        fraction, epochs = length.split("x")
        ind = study.indicators(fp, float(fraction), int(epochs))
        steps = None
        metrics = ind.parent / "metrics.jsonl"
        if metrics.exists():
            last = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()][-1]
            steps = last.get("step")
        for criterion in CRITERIA:
            rows.append(row_of(criterion, steps if steps is not None else length, study.compare(ind, drop, criterion)))
    if not args.no_hessian:
        rows.append(row_of("hessian", "", study.compare(study.hessian(fp), drop, "step")))

    # alpha, measured: the combined score's agreement with the measured drop
    # (whose weights and activations are both loss increases, alpha 1).
    alpha_rows = []
    for length in args.lengths:
        fraction, epochs = length.split("x")
        ind = study.indicators(fp, float(fraction), int(epochs))
        for criterion in CRITERIA:
            for alpha in args.alphas:
                c = study.compare(ind, drop, criterion, alpha)
                alpha_rows.append({"length": length, "criterion": criterion, "alpha": alpha,
                                   "rho_combined_mean": c["mean"]["combined"]["spearman"],
                                   "tau_combined_mean": c["mean"]["combined"]["kendall"]})
    with open(study.out / "alpha.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(alpha_rows[0].keys()))
        w.writeheader()
        w.writerows(alpha_rows)

    header = list(rows[0].keys())
    out_csv = study.out / "ranking.csv"
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(fmt(r[h]) for h in header) + " |" for r in rows]
    (study.out / "ranking.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    for name in ["ranking.csv", "ranking.md", "alpha.csv"]:
        shutil.copy(study.out / name, results / name)
    for name in ["drop.json", "hessian.json"]:
        if (study.out / name).exists():
            shutil.copy(study.out / name, results / name)
    for length in args.lengths:
        fraction, epochs = length.split("x")
        src = study.out / f"indicators_f{float(fraction)}_e{int(epochs)}" / "indicators.json"
        shutil.copy(src, results / f"indicators_f{float(fraction)}_e{int(epochs)}.json")


if __name__ == "__main__":
    main()
