"""The LIMPQ ILP (LIMPQ.md section 6) built with PuLP and solved by CBC, as the
authors do: the baseline for limpq's search-speed bench.

    /usr/bin/python3 bench/pulp_search.py INDICATORS.json --bitops W3A4 --cr 12.2 [--repeats 5]

Prints one JSON line: objective and median wall time of build + solve.
"""
import argparse
import json
import statistics
import time

import pulp


def solve(ind, w_bits, a_bits, cr, alpha=2.0, fixed_bits=8):
    cands = sorted(ind["candidates"], reverse=True)
    layers = [l for l in ind["layers"] if l["searchable"]]
    fixed = [l for l in ind["layers"] if not l["searchable"]]
    prob = pulp.LpProblem("limpq", pulp.LpMinimize)
    x = {}
    for li, l in enumerate(layers):
        w_steps, a_steps = dict(l["weight_steps"]), dict(l["act_steps"])
        for hi, lo in zip(cands, cands[1:]):  # erase non-monotone points, as limpq does
            if l["weight_steps"][str(lo)] < l["weight_steps"][str(hi)]:
                w_steps[str(lo)] = 1e8
            if l["act_steps"][str(lo)] < l["act_steps"][str(hi)]:
                a_steps[str(lo)] = 1e8
        for w in cands:
            for a in cands:
                x[li, w, a] = pulp.LpVariable(f"x_{li}_{w}_{a}", cat="Binary")
        l["_cost"] = {(w, a): a_steps[str(a)] + alpha * w_steps[str(w)] for w in cands for a in cands}
    prob += pulp.lpSum(x[li, w, a] * l["_cost"][w, a] for li, l in enumerate(layers) for w in cands for a in cands)
    for li, _ in enumerate(layers):
        prob += pulp.lpSum(x[li, w, a] for w in cands for a in cands) == 1
    bitops_budget = sum(l["macs"] * w_bits * a_bits for l in layers)
    prob += pulp.lpSum(x[li, w, a] * l["macs"] * w * a for li, l in enumerate(layers)
                       for w in cands for a in cands) <= bitops_budget
    all_params = sum(l["params"] for l in ind["layers"])
    size_budget = int(32 * all_params / cr) - fixed_bits * sum(l["params"] for l in fixed)
    prob += pulp.lpSum(x[li, w, a] * l["params"] * w for li, l in enumerate(layers)
                       for w in cands for a in cands) <= size_budget
    # Debian's PuLP ships no solver binary; it drives the system CBC (coinor-cbc).
    prob.solve(pulp.COIN_CMD(path="/usr/bin/cbc", msg=False))
    return pulp.LpStatus[prob.status], pulp.value(prob.objective)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("indicators")
    ap.add_argument("--bitops", default="W3A4")
    ap.add_argument("--cr", type=float, default=12.2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    w_bits, a_bits = (int(v) for v in args.bitops.upper().lstrip("W").split("A"))
    times, status, objective = [], None, None
    for _ in range(args.repeats):
        ind = json.load(open(args.indicators))
        start = time.perf_counter()
        status, objective = solve(ind, w_bits, a_bits, args.cr)
        times.append(time.perf_counter() - start)
    print(json.dumps({"status": status, "objective": objective, "median_ms": 1e3 * statistics.median(times)}))


if __name__ == "__main__":
    main()
