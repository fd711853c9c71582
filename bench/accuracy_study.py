#!/usr/bin/env python3
"""The accuracy study (issue 17): at the same budget, do limpq's policies
fine-tune better than uniform precision, the Hessian and measured-drop
criteria, and random policies? Choices on the validation split, results on
the untouched test set.

    bench/accuracy_study.py --network resnet20 \\
        --fp bench/results/criterion_ranking/fp_resnet20_val5000.pt \\
        --indicators bench/results/criterion_ranking/indicators_f0.5_e3.json \\
        --drop bench/results/criterion_ranking/drop.json \\
        --hessian bench/results/criterion_ranking/hessian.json

Inputs: a full-precision checkpoint trained without the --val-size
validation images, limpq's jointly trained indicators (with statistics),
and the two sensitivity files (limpq sensitivity --method drop / hessian;
bench/criterion_ranking.py makes all four).

Budgets: W2A3- and W3A3-level BitOps, and CR 12 (weights only; its uniform
baseline is W2A6, the uniform precision that fits with the most bits).
Methods: limpq's default criterion (whatever `limpq search` does without
--criterion/--alpha), the paper's exact criterion (step, alpha 2), the
other forms of the learned step given by --forms (each at its default
alpha; the validation columns are what decides which form is the default),
the Hessian and measured-drop criteria, uniform precision, three random
policies (--random-objective 1, 2, 3) and full precision.

Learning rate, fixed first, from validation top-1 only: limpq's default
policy and uniform precision at every budget are fine-tuned with seed 0 for
--epochs E at each of --lrs; the rate with the best mean is used for
everything after (on mobilenet_v2, before LSQ steps were projected into their
bounds, 0.01 made some of these 78-step runs diverge to chance).

Fine-tuning length, fixed before any test number is read: every method
and budget is fine-tuned with seed 0 for --epochs E and 2E (on --ft-limit
images, BN recalibrated over 50 batches); if the ranking of the methods by
validation top-1 at E agrees with the one at 2E (Kendall tau >= 0.7 at every
budget) the study uses E, otherwise 2E. Then every method and budget is
fine-tuned with --seeds at that length and the test set is read.

Every run is cached under --out (identical policies share runs; an
interrupted study resumes), and each finished fine-tuning run is also
appended to <results>/runs.jsonl, which is committed: a study on a fresh
machine resumes from it. Results: <out>/{length_check,accuracy,verdict}.{csv,md}
(verdict: limpq's default against each baseline, beyond the seed spread or not),
copied to --results.
"""

import argparse
import csv
import json
import shutil
import statistics
from pathlib import Path

from limpq_cli import Study as StudyBase, file_digest, log, policy_run_key

BUDGETS = [("W2A3", ["--bitops", "W2A3"], "W2A3"), ("W3A3", ["--bitops", "W3A3"], "W3A3"),
           ("CR12", ["--cr", "12"], "W2A6")]
RANDOM_SEEDS = [1, 2, 3]
# Changes to limpq's fine-tuning that change its results join every run's key,
# so that no run of older code is reused (the ledger keeps those as history).
# "steps-projected": LSQ steps are projected into [min_step, max_step] after
# each update (before, a step driven below zero stayed there, dead);
# "max-step-change-0.05": and change by at most 5% per update (the default).
FINETUNE_REVISIONS = ["steps-projected", "max-step-change-0.05"]


def kendall_tau(a, b):
    """Kendall tau-b between two score lists (same methods, same order)."""
    n = len(a)
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denom if denom else 1.0


def form_flags(form):
    """limpq search flags of a --forms entry: CRITERION or CRITERION@ALPHA."""
    criterion, _, alpha = form.partition("@")
    return ["--criterion", criterion] + (["--alpha", alpha] if alpha else [])


def form_label(form):
    criterion, _, alpha = form.partition("@")
    return f"limpq {criterion}" + (f" (alpha {alpha})" if alpha else "")


class Study(StudyBase):
    caller = "accuracy_study"

    def __init__(self, args):
        super().__init__(args)
        self.data = ["--dataset", args.dataset, "--val-size", str(args.val_size)]
        self.lr = args.lrs[0]
        self.ledger_path = Path(args.results) / "runs.jsonl"
        self.ledger = self.read_ledger()
        self.binary = file_digest(args.limpq)

    def search(self, budget, flags, name, source, extra):
        # Keyed by the source's content and the binary (whose defaults decide
        # "limpq default"): either changed, the search runs anew; fine-tuning
        # runs are keyed by the policy itself, so identical policies share them.
        path = self.out / "policies" / budget / f"{name}_{file_digest(source)}_{self.binary}.json"
        summary = path.with_suffix(".search.json")
        if not summary.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            result = self.run(["search", "--indicators", str(source), *flags, *extra, "--out", str(path), "--json"],
                              self.out / "search.log")
            summary.write_text(json.dumps(result))
        return str(path), json.loads(summary.read_text())

    def policies(self, budget, flags, uniform):
        """name -> (policy file or WxAy, search summary or None)."""
        a = self.args
        out = {
            "limpq default": self.search(budget, flags, "default", a.indicators, []),
            "paper (step, alpha 2)": self.search(budget, flags, "paper", a.indicators, ["--criterion", "step",
                                                                                        "--alpha", "2"]),
            **{form_label(form): self.search(budget, flags, form.replace("@", "_alpha"), a.indicators,
                                             form_flags(form))
               for form in a.forms},
            "hessian": self.search(budget, flags, "hessian", a.hessian, []),
            "measured drop": self.search(budget, flags, "drop", a.drop, []),
        }
        for s in RANDOM_SEEDS:
            out[f"random {s}"] = self.search(budget, flags, f"random{s}", a.indicators, ["--random-objective", str(s)])
        out[f"uniform {uniform}"] = (uniform, None)
        return out

    def finetune(self, policy, seed, epochs, lr=None):
        """{'val': {...}, 'test': {...}} after fine-tuning under `policy` (a file or WxAy)."""
        lr = self.lr if lr is None else lr
        recipe = [epochs, self.args.ft_limit, self.args.val_size, self.args.bn_batches, self.args.fp]
        if lr != 0.01:  # the rate joins the key only off the first studies' 0.01, so their runs stay cached
            recipe.append(lr)
        recipe += FINETUNE_REVISIONS
        flag, key = policy_run_key(policy, recipe)
        run = f"{key}_s{seed}"
        if run in self.ledger:
            return self.ledger[run]
        d = self.out / "finetune" / run
        cache = d / "result.json"
        if not cache.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            final = self.run(["finetune", "--weights", self.args.fp, "--arch", self.args.arch, *self.data, *flag, "--epochs", str(epochs),
                              "--limit", str(self.args.ft_limit), "--lr", f"{lr:g}", "--bn-recalibration-batches",
                              str(self.args.bn_batches), "--seed", str(seed), "--out-dir", str(d), "--resume",
                              "--progress", "false", "--json"], d.with_suffix(".log"))
            last = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if l.strip()][-1]
            cache.write_text(json.dumps({"val": last["val"], "test": final["test"]}))
            (d / "checkpoint.pt").unlink(missing_ok=True)  # the figures are kept; the weights are not needed
        result = json.loads(cache.read_text())
        self.record(run, result)
        return result

    def read_ledger(self):
        """run -> result of every fine-tuning run recorded in <results>/runs.jsonl."""
        path = self.ledger_path
        lines = path.read_text().splitlines() if path.exists() else []
        return {r["run"]: r["result"] for r in map(json.loads, filter(str.strip, lines))}

    def record(self, run, result):
        """Appends a finished run to the ledger, which is committed with the
        results: a study on a fresh machine resumes from it."""
        self.ledger[run] = result
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.ledger_path, "a") as f:
            f.write(json.dumps({"run": run, "result": result}, sort_keys=True) + "\n")

    def full_precision_test(self):
        cache = self.out / "fp_test.json"
        if not cache.exists():
            r = self.run(["eval", "--checkpoint", self.args.fp, "--dataset", self.args.dataset, "--json"],
                         self.out / "fp_eval.log")
            cache.write_text(json.dumps(r))
        return json.loads(cache.read_text())


def write_table(study, name, rows):
    header = list(rows[0].keys())
    with open(study.out / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    (study.out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    results = Path(study.args.results)
    results.mkdir(parents=True, exist_ok=True)
    for ext in ("csv", "md"):
        shutil.copy(study.out / f"{name}.{ext}", results / f"{name}.{ext}")


def mean_std(values):
    m = statistics.mean(values)
    return f"{m:.2f}", f"{statistics.stdev(values):.2f}" if len(values) > 1 else ""


def compare_to_default(tests):
    """Rows of the plain statement: limpq's default against each baseline at
    one budget. tests: method -> test top-1 of each seed. The random policies
    are pooled into their mean. A gap counts only beyond the spread: the larger
    seed standard deviation of the two sides (for the pooled random policies,
    the mean of their per-policy deviations)."""
    def std(v):
        return statistics.stdev(v) if len(v) > 1 else 0.0

    default = tests["limpq default"]
    randoms = [v for n, v in tests.items() if n.startswith("random")]
    baselines = {n: (statistics.mean(v), std(v)) for n, v in tests.items()
                 if n != "limpq default" and not n.startswith("random")}
    if randoms:
        baselines["random (mean)"] = (statistics.mean(x for v in randoms for x in v),
                                      statistics.mean(std(v) for v in randoms))
    mean, spread = statistics.mean(default), std(default)
    rows = []
    for name, (m, s) in baselines.items():
        gap, bound = mean - m, max(spread, s)
        outcome = "beats" if gap > bound else "below" if gap < -bound else "within spread"
        rows.append({"baseline": name, "default_top1": f"{mean:.2f}", "baseline_top1": f"{m:.2f}",
                     "gap": f"{gap:+.2f}", "spread": f"{bound:.2f}", "default_is": outcome})
    return rows


def add_finetune_arguments(p, required=True, epochs_help="fine-tuning epochs"):
    """The arguments of a study that fine-tunes through Study: its network,
    folders, binary, full-precision checkpoint, data and recipe."""
    p.add_argument("--network", required=required, help="a name for the outputs (resnet20, mobilenet_v2)")
    p.add_argument("--out", default="", help="cache folder (default: runs/accuracy_study/NETWORK)")
    p.add_argument("--results", default="", help="tables and ledger (default: bench/results/accuracy_study/NETWORK)")
    p.add_argument("--limpq", default="build/limpq")
    p.add_argument("--fp", required=required, help="full-precision checkpoint")
    p.add_argument("--arch", default="resnet20", help="the network of --fp")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=1, help=epochs_help)
    p.add_argument("--ft-limit", type=int, default=10000)
    p.add_argument("--bn-batches", type=int, default=50)


def default_folders(args):
    """--out and --results of the network, where not given: the accuracy
    study's, so that studies of one network share runs and ledger."""
    args.out = args.out or f"runs/accuracy_study/{args.network}"
    args.results = args.results or f"bench/results/accuracy_study/{args.network}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_finetune_arguments(p, epochs_help="the shorter fine-tuning length E of the check")
    p.add_argument("--indicators", required=True)
    p.add_argument("--drop", required=True)
    p.add_argument("--hessian", required=True)
    p.add_argument("--forms", nargs="*", default=["fisher"],
                   help="forms of the learned step studied beside the default: CRITERION (limpq search "
                        "--criterion, at its default alpha) or CRITERION@ALPHA")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01],
                   help="fine-tuning learning rates to choose from on validation (the first if only one)")
    p.add_argument("--tau", type=float, default=0.7, help="ranking agreement that counts as unchanged")
    args = p.parse_args()
    default_folders(args)
    study = Study(args)
    plans = {budget: study.policies(budget, flags, uniform) for budget, flags, uniform in BUDGETS}

    # 0. The learning rate, from validation top-1 only.
    short, long_ = args.epochs, 2 * args.epochs
    if len(args.lrs) > 1:
        rows, mean = [], {}
        for lr in args.lrs:
            vals = []
            for budget, methods in plans.items():
                for name in ("limpq default", next(n for n in methods if n.startswith("uniform"))):
                    v = study.finetune(methods[name][0], 0, short, lr)["val"]["top1"]
                    vals.append(v)
                    rows.append({"lr": f"{lr:g}", "budget": budget, "method": name, f"val_top1_{short}ep": f"{v:.2f}"})
            mean[lr] = statistics.mean(vals)
        study.lr = max(args.lrs, key=lambda lr: mean[lr])
        for r in rows:
            r["mean_of_lr"] = f"{mean[float(r['lr'])]:.2f}"
        write_table(study, "lr_check", rows)
        log(f"fine-tuning learning rate: {study.lr:g} (mean validation top-1 {mean[study.lr]:.2f})")

    # 1. The fine-tuning length, from validation top-1 only.
    check, stable = [], True
    for budget, methods in plans.items():
        names = list(methods)
        at = {e: [study.finetune(methods[n][0], 0, e)["val"]["top1"] for n in names] for e in (short, long_)}
        tau = kendall_tau(at[short], at[long_])
        stable &= tau >= args.tau
        for i, n in enumerate(names):
            check.append({"budget": budget, "method": n, f"val_top1_{short}ep": f"{at[short][i]:.2f}",
                          f"val_top1_{long_}ep": f"{at[long_][i]:.2f}", "kendall_tau_of_budget": f"{tau:.3f}"})
    write_table(study, "length_check", check)
    epochs = short if stable else long_
    log(f"fine-tuning length: {epochs} epoch(s) ({'ranking unchanged' if stable else 'ranking changed'} when doubled)")

    # 2. The study at that length; the test set is read here.
    rows, tests = [], {}
    fp = study.full_precision_test()
    for budget, methods in plans.items():
        for name, (policy, summary) in methods.items():
            runs = [study.finetune(policy, s, epochs) for s in args.seeds]
            test = tests.setdefault(budget, {})[name] = [r["test"]["top1"] for r in runs]
            test_m, test_s = mean_std(test)
            val_m, val_s = mean_std([r["val"]["top1"] for r in runs])
            rows.append({
                "budget": budget, "method": name,
                "criterion": summary.get("criterion", "") if summary else "",
                "alpha": f"{summary['alpha']:g}" if summary and "alpha" in summary else "",
                "avg_w_bits": f"{summary['average_weight_bits']:.2f}" if summary else "",
                "avg_a_bits": f"{summary['average_act_bits']:.2f}" if summary else "",
                "gbitops": f"{summary['achieved_bitops'] / 1e9:.4f}" if summary else "",
                "size_kb": f"{summary['achieved_size_bytes'] / 1e3:.1f}" if summary else "",
                "epochs": epochs, "seeds": len(runs),
                "val_top1": val_m, "val_std": val_s,
                "test_top1": test_m, "test_std": test_s,
                "test_runs": " ".join(f"{r['test']['top1']:.2f}" for r in runs),
            })
    rows.append({k: "" for k in rows[0]} | {"budget": "FP", "method": "full precision",
                                            "test_top1": f"{fp['top1']:.2f}", "seeds": 1})
    write_table(study, "accuracy", rows)
    write_table(study, "verdict", [{"budget": b} | r for b, t in tests.items() for r in compare_to_default(t)])


if __name__ == "__main__":
    main()
