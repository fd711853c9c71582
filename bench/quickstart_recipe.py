#!/usr/bin/python3
"""The quick start's recipe, chosen on the validation split.

`configs/quickstart.yaml` must run the whole pipeline in at most 8 minutes on
2 cores and show what limpq's policy gains over uniform precision. This
script fixes the parts of its recipe that the accuracy study does not (the
budget and the fine-tuning length at the quick start's small scale) from
validation top-1 alone:

  /usr/bin/python3 bench/quickstart_recipe.py --seeds 0 1

For each seed, `limpq run` trains mobilenet_v2_stem1 at full precision on
12k Fashion-MNIST images (5000 others held out for validation) and its
indicators once, then fine-tunes every variant of the grid below (the
searched policy and uniform precision at the same budget) on top of them.
The test split is cut to 100 images (data.test_limit) and never read: the
figures here are the last epoch's validation top-1 from each stage's
metrics.jsonl.

Rule, fixed before any run: the variant with the largest mean validation
margin (policy minus uniform) over the seeds wins, among those whose main
job is estimated at 7 minutes or less on this machine (the stages' own
times without their validation passes, each at its fastest seed); a tie
goes to the shorter one.

Writes <out>/recipe.{md,json}; finished variants are kept and skipped on a
rerun.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from limpq_cli import log

# The grid: what is chosen here. Everything else is the quick start's.
BUDGETS = ["W3A3", "W2A3"]
FINETUNE_EPOCHS = [1, 2]
BASE = {
    "data": {"dataset": "fashion-mnist", "limit": 12000, "val_size": 5000, "test_limit": 100},
    "model": {"arch": "mobilenet_v2_stem1"},
    "train": {"epochs": 4, "lr": 0.1, "warmup_epochs": 0.5},
    "indicators": {"candidates": [6, 5, 4, 3, 2], "fraction": 0.25, "epochs": 1},
    "finetune": {},
    "search": {},
    "run": {},
}
MAX_MINUTES = 7.0


def yaml_value(v):
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def write_config(path, config):
    lines = []
    for section, fields in config.items():
        if not fields:
            continue
        lines.append(f"{section}:")
        lines += [f"  {k}: {yaml_value(v)}" for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")


def last_val_top1(stage_dir):
    rows = [json.loads(l) for l in (stage_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return rows[-1]["val"]["top1"]


def stage_seconds(stage_dir):
    return float((stage_dir / "seconds").read_text())


def val_pass_seconds(stage_dir):
    """The stage's time spent outside training epochs (its validation passes, mostly)."""
    rows = [json.loads(l) for l in (stage_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return max(0.0, stage_seconds(stage_dir) - sum(r.get("train_seconds", 0) for r in rows))


def run_variant(args, seed, budget, epochs):
    """Validation top-1 of the policy and of uniform precision, and the stage
    times, for one variant at one seed (cached in the variant's folder)."""
    base = Path(args.out) / f"seed{seed}"
    variant = base / "variants" / f"{budget}_ft{epochs}"
    result_path = variant / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    config = json.loads(json.dumps(BASE))
    config["search"]["bitops"] = budget
    config["finetune"]["epochs"] = epochs
    config["run"] = {"out_dir": str(base / "pipeline"), "seed": seed}
    config_path = base / f"{budget}_ft{epochs}.yaml"
    base.mkdir(parents=True, exist_ok=True)
    write_config(config_path, config)
    pipeline = base / "pipeline"
    for stage in ("finetune_policy", "finetune_uniform"):
        shutil.rmtree(pipeline / stage, ignore_errors=True)
    log(f"seed {seed}: {budget}, {epochs} fine-tuning epoch(s)")
    variant.mkdir(parents=True, exist_ok=True)
    with open(variant / "run.log", "w") as err:
        proc = subprocess.run([args.limpq, "run", str(config_path)], stdout=subprocess.DEVNULL, stderr=err)
    if proc.returncode != 0:
        sys.exit(f"quickstart_recipe: limpq run failed ({proc.returncode}); see {variant / 'run.log'}")
    stages = {s: pipeline / s for s in ("fp", "indicators", "finetune_policy", "finetune_uniform")}
    result = {
        "seed": seed, "budget": budget, "finetune_epochs": epochs,
        "val_fp": last_val_top1(stages["fp"]),
        "val_policy": last_val_top1(stages["finetune_policy"]),
        "val_uniform": last_val_top1(stages["finetune_uniform"]),
        "stage_seconds": {s: stage_seconds(d) for s, d in stages.items()},
        "val_pass_seconds": {s: val_pass_seconds(d) for s, d in stages.items()},
    }
    result["margin"] = result["val_policy"] - result["val_uniform"]
    for stage in ("finetune_policy", "finetune_uniform"):
        shutil.move(str(pipeline / stage), str(variant / stage))
    shutil.copy(pipeline / "policy.json", variant / "policy.json")
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def estimated_minutes(results):
    """The main job's minutes without validation: the stages' times less their
    validation passes (each stage's fastest seed: other work on the machine
    only slows a stage), plus 40 s for start-up and three test evaluations."""
    total = 0.0
    for stage in ("fp", "indicators", "finetune_policy", "finetune_uniform"):
        total += min(r["stage_seconds"][stage] - r["val_pass_seconds"][stage] for r in results)
    return (total + 40) / 60


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limpq", default="build/limpq")
    p.add_argument("--out", default="runs/quickstart_recipe")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--only", default="",
                   help="one variant, BUDGET:EPOCHS (e.g. W2A3:2): its spread over more seeds, without choosing")
    args = p.parse_args()
    args.limpq = str(Path(args.limpq).resolve())
    start = time.time()
    rows = []
    grid = [(b, e) for b in BUDGETS for e in FINETUNE_EPOCHS]
    if args.only:
        budget, epochs = args.only.split(":")
        grid = [(budget, int(epochs))]
    for budget, epochs in grid:
        results = [run_variant(args, s, budget, epochs) for s in args.seeds]
        margins = [r["margin"] for r in results]
        rows.append({
            "budget": budget, "finetune_epochs": epochs,
            "val_policy": [r["val_policy"] for r in results],
            "val_uniform": [r["val_uniform"] for r in results],
            "margin_mean": statistics.mean(margins),
            "margin_std": statistics.stdev(margins) if len(margins) > 1 else 0.0,
            "val_fp": statistics.mean(r["val_fp"] for r in results),
            "minutes": estimated_minutes(results),
        })
    out = Path(args.out)
    if args.only:
        name = f"spread_{args.only.replace(':', '_ft')}"
        (out / f"{name}.json").write_text(json.dumps({"seeds": args.seeds, "rows": rows}, indent=2) + "\n")
        r = rows[0]
        text = (f"{r['budget']}, {r['finetune_epochs']} epoch(s), seeds {', '.join(map(str, args.seeds))}, validation "
                f"top-1: uniform {' / '.join(f'{v:.2f}' for v in r['val_uniform'])}, policy "
                f"{' / '.join(f'{v:.2f}' for v in r['val_policy'])}; policy - uniform {r['margin_mean']:+.2f} +- "
                f"{r['margin_std']:.2f}")
        (out / f"{name}.md").write_text(text + "\n")
        print(text)
        return
    eligible = [r for r in rows if r["minutes"] <= MAX_MINUTES]
    chosen = max(eligible, key=lambda r: (round(r["margin_mean"], 2), -r["minutes"])) if eligible else None
    (out / "recipe.json").write_text(json.dumps({"seeds": args.seeds, "rows": rows, "chosen": chosen}, indent=2) + "\n")
    lines = [
        f"Validation top-1 (5000 held-out training images), seeds {', '.join(map(str, args.seeds))}; "
        f"full precision {rows[0]['val_fp']:.2f} (mean).",
        "",
        "| budget | fine-tuning epochs | uniform | limpq policy | policy - uniform (mean +- std) | main job (est.) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['budget']} | {r['finetune_epochs']} | {' / '.join(f'{v:.2f}' for v in r['val_uniform'])} | "
            f"{' / '.join(f'{v:.2f}' for v in r['val_policy'])} | {r['margin_mean']:+.2f} +- {r['margin_std']:.2f} | "
            f"{r['minutes']:.1f} min |")
    lines += ["", f"chosen: {chosen['budget']}, {chosen['finetune_epochs']} epoch(s)" if chosen else "chosen: none"]
    (out / "recipe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"done in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
