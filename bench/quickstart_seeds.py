#!/usr/bin/python3
"""The quick start at seeds 0, 1 and 2: test top-1 of full precision,
uniform precision and limpq's policy, and the main job's wall time.

  /usr/bin/python3 bench/quickstart_seeds.py            # one job at a time, on a quiet machine

Each seed runs `limpq run configs/quickstart.yaml` with run.seed set and
its own out_dir (runs/quickstart_seed<N>), from an empty folder; a seed
whose result is already in <out>/seeds.json is kept. Writes
<out>/seeds.{json,md}: every row of every seed, the policy's gain over
uniform per seed, and their mean and standard deviation.
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


def run_seed(args, seed):
    config = Path(args.config).read_text()
    out_dir = Path(args.runs) / f"quickstart_seed{seed}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    path = out_dir.parent / f"quickstart_seed{seed}.yaml"
    # The quick start's config with its seed and folder replaced.
    lines = []
    for line in config.splitlines():
        if line.strip().startswith("seed:"):
            line = f"  seed: {seed}"
        elif line.strip().startswith("out_dir:"):
            line = f"  out_dir: {out_dir}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    log(f"seed {seed}: limpq run {path}")
    start = time.time()
    with open(out_dir.parent / f"quickstart_seed{seed}.log", "w") as err:
        proc = subprocess.run([args.limpq, "run", str(path), "--json"], stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0:
        sys.exit(f"quickstart_seeds: seed {seed} failed ({proc.returncode})")
    result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    return {"seed": seed, "wall_seconds": time.time() - start, "rows": result["rows"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limpq", default="build/limpq")
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="bench/results/quickstart")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    args.limpq = str(Path(args.limpq).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done_path = out / "seeds.json"
    done = {r["seed"]: r for r in json.loads(done_path.read_text())["seeds"]} if done_path.exists() else {}
    for seed in args.seeds:
        if seed in done:
            continue
        done[seed] = run_seed(args, seed)
        done_path.write_text(json.dumps({"config": args.config, "seeds": [done[s] for s in sorted(done)]}, indent=2)
                             + "\n")
    seeds = [done[s] for s in sorted(done)]
    names = [r["name"] for r in seeds[0]["rows"]]
    top1 = {n: [next(r["top1"] for r in s["rows"] if r["name"] == n) for s in seeds] for n in names}
    uniform = next(n for n in names if n.startswith("uniform"))
    policy = next(n for n in names if n.endswith("policy"))
    gain = [a - b for a, b in zip(top1[policy], top1[uniform])]

    def mean_std(v, sign=""):
        return f"{statistics.mean(v):{sign}.2f} +- {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:{sign}.2f}"

    lines = [f"`limpq run {args.config}` at seeds {', '.join(str(s['seed']) for s in seeds)}; test top-1 (10k images).",
             "", "| | " + " | ".join(f"seed {s['seed']}" for s in seeds) + " | mean +- std |",
             "|---|" + "---|" * len(seeds) + "---|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in top1[n]) + f" | {mean_std(top1[n])} |")
    lines.append("| policy - uniform | " + " | ".join(f"{g:+.2f}" for g in gain) + f" | {mean_std(gain, '+')} |")
    lines.append("| main job (wall) | " + " | ".join(f"{s['wall_seconds'] / 60:.1f} min" for s in seeds) + " | |")
    (out / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
