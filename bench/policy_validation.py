#!/usr/bin/env python3
"""Which criterion's policies fine-tune best? Chosen on held-out data only.

For each budget, every criterion's policy (limpq search on one indicators
file, or on a measured criterion) and uniform precision are fine-tuned with
one shared recipe and several seeds, and scored on the validation split
(--val-size examples the full-precision network never trained on). The
test set is neither used nor printed: this is where the default criterion
and alpha are chosen; the accuracy study reports the test set afterwards.

    bench/policy_validation.py --fp runs/criterion_ranking/fp/checkpoint.pt \\
        --indicators runs/criterion_ranking/indicators_f0.5_e3/indicators.json \\
        --measured runs/criterion_ranking/drop.json runs/criterion_ranking/hessian.json

Every fine-tuning run is cached under --out (identical policies share runs);
an interrupted study resumes. Results: <out>/validation.csv and .md.
"""

import argparse
import csv
import json
import shutil
import statistics
from pathlib import Path

from limpq_cli import Study as StudyBase, file_digest, log, policy_run_key

CRITERIA = ["step", "relative", "noise", "fisher", "fisher-error"]


class Study(StudyBase):
    caller = "policy_validation"

    def __init__(self, args):
        super().__init__(args)
        self.data = ["--dataset", args.dataset, "--val-size", str(args.val_size)]

    def search(self, indicators, budget, name, extra):
        # Keyed by the source's content: another indicators file searches anew.
        path = self.out / "policies" / budget / f"{name}_{file_digest(indicators)}.json"
        summary = path.with_suffix(".search.json")
        if not summary.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            result = self.run(["search", "--indicators", str(indicators), "--bitops", budget, *extra, "--out",
                               str(path), "--json"], self.out / "search.log")
            summary.write_text(json.dumps(result))
        return path, json.loads(summary.read_text())

    def finetune_val(self, policy, seed):
        """Validation top-1 and loss after fine-tuning under `policy` (a file or WxAy)."""
        recipe = [self.args.ft_epochs, self.args.ft_limit, self.args.val_size, self.args.bn_batches]
        flag, key = policy_run_key(policy, recipe)
        d = self.out / "finetune" / f"{key}_s{seed}"
        cache = d / "val.json"
        if not cache.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            self.run(["finetune", "--weights", self.args.fp, *self.data, *flag, "--epochs", str(self.args.ft_epochs),
                      "--limit", str(self.args.ft_limit), "--lr", "0.01", "--bn-recalibration-batches",
                      str(self.args.bn_batches), "--seed", str(seed), "--out-dir", str(d), "--resume", "--progress",
                      "false"], d.with_suffix(".log"))
            # The last epoch's validation figures; the run's closing test
            # evaluation is not read.
            last = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if l.strip()][-1]
            cache.write_text(json.dumps(last["val"]))
        return json.loads(cache.read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/policy_validation")
    p.add_argument("--results", default="bench/results/policy_validation")
    p.add_argument("--limpq", default="build/limpq")
    p.add_argument("--fp", required=True)
    p.add_argument("--indicators", required=True, help="jointly trained indicators (with stats)")
    p.add_argument("--measured", nargs="*", default=[], help="criteria from limpq sensitivity (drop, hessian)")
    p.add_argument("--criteria", nargs="+", default=CRITERIA)
    p.add_argument("--budgets", nargs="+", default=["W2A3", "W3A3"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--alphas", nargs="*", type=float, default=[], help="extra alphas tried for every criterion")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--ft-epochs", type=int, default=1)
    p.add_argument("--ft-limit", type=int, default=10000)
    p.add_argument("--bn-batches", type=int, default=50)
    args = p.parse_args()

    study = Study(args)
    rows = []
    for budget in args.budgets:
        methods = {}
        for criterion in args.criteria:
            methods[criterion] = study.search(args.indicators, budget, criterion, ["--criterion", criterion])
            for alpha in args.alphas:
                name = f"{criterion}_alpha{alpha:g}"
                methods[name] = study.search(args.indicators, budget, name,
                                             ["--criterion", criterion, "--alpha", f"{alpha:g}"])
        for path in args.measured:
            name = Path(path).stem
            methods[name] = study.search(path, budget, name, [])
        methods["uniform"] = (budget, None)
        for name, (policy, summary) in methods.items():
            vals = [study.finetune_val(str(policy), s) for s in args.seeds]
            top1 = [v["top1"] for v in vals]
            rows.append({
                "budget": budget, "method": name,
                "avg_w_bits": f"{summary['average_weight_bits']:.2f}" if summary else "",
                "avg_a_bits": f"{summary['average_act_bits']:.2f}" if summary else "",
                "gbitops": f"{summary['achieved_bitops'] / 1e9:.4f}" if summary else "",
                "seeds": len(top1),
                "val_top1_mean": f"{statistics.mean(top1):.2f}",
                "val_top1_std": f"{statistics.stdev(top1):.2f}" if len(top1) > 1 else "",
                "val_top1_runs": " ".join(f"{t:.2f}" for t in top1),
                "val_loss_mean": f"{statistics.mean(v['loss'] for v in vals):.4f}",
            })
    header = list(rows[0].keys())
    with open(study.out / "validation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    (study.out / "validation.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    for name in ["validation.csv", "validation.md"]:
        shutil.copy(study.out / name, results / name)


if __name__ == "__main__":
    main()
