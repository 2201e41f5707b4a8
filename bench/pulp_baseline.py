#!/usr/bin/env python3
"""The paper's toolchain as a baseline: HAWQ-V3-style ILP in PuLP, solved by CBC in a subprocess.

Usage: pulp_baseline.py MANIFEST.json --max-bops N [--max-size-bytes N] [--repeat R]
Prints one JSON line: median wall time per solve (ms) and the objective it found, so the caller can
compare both speed and optimality with bitplan on the same instance.
"""
import argparse, json, statistics, time

import pulp


def omega(layer, b):
    p = layer.get("perturbation")
    if p is not None:
        return layer["hessian_trace"] / layer["params"] * p[str(b)]
    return layer["hessian_trace"] * 4.0 ** (-b) / 3.0


def solve(m, args):
    prob = pulp.LpProblem("bits", pulp.LpMinimize)
    layers = m["layers"]
    act = m.get("activation_bits", "same")
    x = {}
    for i, l in enumerate(layers):
        bits = [l["pin"]] if "pin" in l else l.get("bits", m["bits"])
        x[i] = {b: pulp.LpVariable(f"x_{i}_{b}", cat="Binary") for b in bits}
        prob += pulp.lpSum(x[i].values()) == 1
    prob += pulp.lpSum(omega(l, b) * v for i, l in enumerate(layers) for b, v in x[i].items())
    if args.max_bops is not None:
        prob += pulp.lpSum(l["macs"] * b * (b if act == "same" else act) * v for i, l in enumerate(layers) for b, v in x[i].items()) <= args.max_bops
    if args.max_size_bytes is not None:
        prob += pulp.lpSum(l["params"] * b / 8 * v for i, l in enumerate(layers) for b, v in x[i].items()) <= args.max_size_bytes
    ties = {}
    for i, l in enumerate(layers):
        if "tie" in l:
            ties.setdefault(l["tie"], []).append(i)
    for members in ties.values():
        a = members[0]
        for o in members[1:]:
            for b in x[a]:
                prob += x[a][b] == (x[o][b] if b in x[o] else 0)
    prob.solve(pulp.PULP_CBC_CMD(msg=0, gapRel=0))
    assert pulp.LpStatus[prob.status] == "Optimal", pulp.LpStatus[prob.status]
    chosen = [max(x[i], key=lambda b: x[i][b].value()) for i in range(len(layers))]
    return sum(omega(l, b) for l, b in zip(layers, chosen))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--max-bops", type=float)
    ap.add_argument("--max-size-bytes", type=float)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    m = json.load(open(args.manifest))
    times, obj = [], None
    for _ in range(args.repeat):
        t = time.perf_counter()
        obj = solve(m, args)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"solve_ms": statistics.median(times), "omega": obj}))


if __name__ == "__main__":
    main()
