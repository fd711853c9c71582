#!/usr/bin/env python3
"""alpha of a learned criterion, chosen on the validation split only.

alpha weighs the weight indicators against the activation ones in the
search's objective (I_a + alpha I_w): at a BitOps budget it decides how the
bits are split between weights and activations. For each --alphas value the
criterion's policy is searched at the W2A3- and W3A3-level BitOps budgets
(the size budget is weights-only, where alpha changes nothing), fine-tuned
with the accuracy study's recipe for --epochs at each of --seeds, and its
validation top-1 recorded; the test set is not read.

    bench/alpha_check.py --network resnet20 --fp FP --arch resnet20 --indicators IND \\
        --alphas 0.05 0.1 0.25 0.5
    bench/alpha_check.py --choose bench/results/accuracy_study/*/alpha_check.csv

Runs share the accuracy study's cache and ledger (same --out and --results
defaults), so the study reuses them. Results: <results>/alpha_check.{csv,md};
--choose prints every alpha's mean over the given tables (networks x
budgets x seeds) and the best.
"""

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from accuracy_study import BUDGETS, Study, add_finetune_arguments, default_folders, write_table
from limpq_cli import log


def check(args):
    study = Study(args)
    rows = []
    for budget, flags, uniform in BUDGETS:
        if "--bitops" not in flags:
            continue
        policies = {f"{a:g}": study.search(budget, flags, f"{args.criterion}_alpha{a:g}", args.indicators,
                                           ["--criterion", args.criterion, "--alpha", f"{a:g}"])
                    for a in args.alphas}
        policies[f"uniform {uniform}"] = (uniform, None)
        for alpha, (policy, summary) in policies.items():
            for seed in args.seeds:
                val = study.finetune(policy, seed, args.epochs)["val"]["top1"]
                rows.append({"network": args.network, "criterion": args.criterion if summary else "",
                             "alpha": alpha, "budget": budget,
                             "avg_w_bits": f"{summary['average_weight_bits']:.2f}" if summary else "",
                             "avg_a_bits": f"{summary['average_act_bits']:.2f}" if summary else "",
                             "seed": seed, f"val_top1_{args.epochs}ep": f"{val:.2f}"})
    write_table(study, "alpha_check", rows)


def choose(paths):
    """Every alpha's mean validation top-1 over the tables; the best."""
    vals = defaultdict(list)
    for path in paths:
        if not Path(path).is_file():
            sys.exit(f"alpha_check: {path}: no such file (expected an alpha_check.csv of bench/alpha_check.py)")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            key = next((k for k in reader.fieldnames or [] if k.startswith("val_top1")), None)
            if key is None or "alpha" not in reader.fieldnames:
                sys.exit(f"alpha_check: {path}: expected the columns 'alpha' and 'val_top1_<E>ep' of an "
                         f"alpha_check.csv, got {reader.fieldnames}")
            for line, r in enumerate(reader, start=2):
                alpha = "uniform" if r["alpha"].startswith("uniform") else r["alpha"]
                try:
                    vals[alpha].append(float(r[key]))
                except ValueError:
                    sys.exit(f"alpha_check: {path}, line {line}: {key} must be a top-1 percentage, got {r[key]!r}")
    counts = {a: len(v) for a, v in vals.items()}
    if len(set(counts.values())) != 1:
        sys.exit(f"alpha_check: the tables do not hold the same runs for every alpha: runs per alpha {counts}; "
                 "every alpha (and uniform) needs one run per network, budget and seed")
    means = {a: statistics.mean(v) for a, v in vals.items()}
    for a, m in means.items():
        print(f"{a:>14}: mean validation top-1 {m:.2f} over {len(vals[a])} runs")
    learned = {a: m for a, m in means.items() if a != "uniform"}
    best = max(learned, key=learned.get)
    log(f"best alpha: {best} ({learned[best]:.2f})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--choose", nargs="+", metavar="CSV", help="only compare alpha_check.csv tables")
    add_finetune_arguments(p, required=False)
    p.add_argument("--indicators")
    p.add_argument("--criterion", default="fisher-error")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--lr", type=float, default=0.01)
    args = p.parse_args()
    if args.choose:
        choose(args.choose)
        return
    for name in ("network", "fp", "indicators"):
        if getattr(args, name) is None:
            p.error(f"--{name} is required (or --choose)")
    args.lrs = [args.lr]
    default_folders(args)
    check(args)


if __name__ == "__main__":
    main()
