#!/usr/bin/env python3
"""`bitplan search` against its baselines on one model, as measured.

Usage: search_vs_baselines.py BITPLAN MODEL_DIR [--evaluations N [N ...]] [--budgets 6 5 4.5]
                              [--split-from DATA.npz]

MODEL_DIR holds model.onnx, calib.npz (every method measures on it) and val.npz (the
configuration each method picks at a budget is then evaluated on it: other images). With
--split-from, calib.npz and val.npz are written first: the first half of DATA.npz's samples and
the second. The starting objective of every method is the measured single-layer sensitivity on
calib.npz (`bitplan manifest --data`, kept as MODEL_DIR/manifest.json).

Methods, each given the same N evaluations (`bitplan search --method`):
- search: plan on the objective, measure, refit it to the measurements, plan again;
- proxy-only: the exact front of the starting objective, N points spread along it;
- greedy: AIMET-style, lowering the layer that costs least sensitivity per bit saved, N points
  spread along that path;
- uniform: every layer at the same bit-width (one evaluation per width, not counted in N).

For each method and average-bit budget: the measured point of least KL on calib.npz within the
budget, then its KL from fp32 and top-1 agreement on val.npz. Also the area under each method's
measured front (KL on calib.npz against average bits, a staircase, from the smallest budget to the
highest width). Prints a Markdown table and, last, one JSON line with every figure.

Where a method's measured points happen to fall just under a budget moves a cell by as much as
the methods differ: on one image set of PP-OCR's classifier, proxy-only's cell at 4.5 bits is
4.6e-2 with 36 evaluations and 2.9e-2 with 40. Several counts (`--evaluations 36 38 40 42 44`) run
every method once per count; each cell is then the geometric mean over the runs (the area too),
with the number of runs in which search was at least as good as both baselines.
"""
import argparse, json, math, os, subprocess, sys, tempfile, time

import numpy as np


def run(*args):
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


def split(data, folder):
    """The first half of every array's samples to calib.npz, the rest to val.npz."""
    arrays = dict(np.load(data))
    n = len(next(iter(arrays.values())))
    for name, part in [("calib.npz", slice(0, n // 2)), ("val.npz", slice(n // 2, n))]:
        np.savez(os.path.join(folder, name), **{k: v[part] for k, v in arrays.items()})


def staircase_area(points, lo, hi):
    """Integral over [lo, hi] of the least loss among points at or below x (inf when none)."""
    pts = sorted(p for p in points if p[0] <= hi + 1e-9)
    if not pts or pts[0][0] > lo + 1e-9:
        return float("inf")
    xs = sorted({lo, hi} | {x for x, _ in pts if lo < x < hi})
    area = 0.0
    for a, b in zip(xs, xs[1:]):
        best = min(l for x, l in pts if x <= a + 1e-9)
        area += best * (b - a)
    return area


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bitplan")
    ap.add_argument("folder")
    ap.add_argument("--evaluations", type=int, nargs="+", default=[40])
    ap.add_argument("--budgets", type=float, nargs="+", default=[6.0, 5.0, 4.5])
    ap.add_argument("--split-from")
    a = ap.parse_args()
    bitplan, folder = a.bitplan, a.folder
    if a.split_from:
        split(a.split_from, folder)
    model, calib, val = (os.path.join(folder, f) for f in ("model.onnx", "calib.npz", "val.npz"))
    manifest = os.path.join(folder, "manifest.json")
    if not os.path.exists(manifest):
        with open(manifest, "w") as f:
            f.write(run(bitplan, "manifest", model, "--data", calib))
    doc = json.load(open(manifest))
    layers = [l["name"] for l in doc["layers"]]
    # Uniform widths: every unpinned layer at the width (pinned ones stay at their pin).
    free = [l for l in doc["layers"] if l.get("pin") is None]
    widths = sorted(set.intersection(*(set(l.get("bits") or doc["bits"]) for l in free)), reverse=True)
    pins = {l["name"]: l["pin"] for l in doc["layers"] if l.get("pin") is not None}
    tmp = tempfile.mkdtemp()

    cache = {}

    def evaluate(bits, data):
        key = (json.dumps(bits, sort_keys=True), data)
        if key not in cache:
            path = os.path.join(tmp, "bits.json")
            with open(path, "w") as f:
                json.dump(bits, f)
            cache[key] = json.loads(run(bitplan, "evaluate", manifest, "--model", model, "--data", data,
                                        "--bits", path, "--format", "json"))
        return cache[key]

    def front_of(method, n):
        out = json.loads(run(bitplan, "search", manifest, "--model", model, "--data", calib,
                             "--pareto", "avg_bits", "--evaluations", str(n),
                             "--method", method, "--format", "json"))
        return out["evaluations"], [(p["avg_bits"], p["measured"]["kl_fp32"], p["bits"]) for p in out["front"]]

    # fronts[method]: one measured front per run (uniform has one, whatever the count).
    fronts, spent, seconds = {}, {}, {}
    for method in ["search", "proxy-only", "greedy"]:
        t = time.perf_counter()
        runs = [front_of(method, n) for n in a.evaluations]
        seconds[method] = (time.perf_counter() - t) / len(runs)
        spent[method] = [e for e, _ in runs]
        fronts[method] = [f for _, f in runs]
    t = time.perf_counter()
    uniform = []
    params = {l["name"]: l["params"] for l in doc["layers"]}
    for w in widths:
        bits = {l: pins.get(l, w) for l in layers}
        avg = sum(params[l] * b for l, b in bits.items()) / sum(params.values())
        uniform.append((avg, evaluate(bits, calib)["kl_fp32"], bits))
    seconds["uniform"], spent["uniform"], fronts["uniform"] = time.perf_counter() - t, [len(widths)], [uniform]

    # KL is clamped at 0 (a configuration that reproduces fp32 on these images), and a run may
    # have no point within a budget or no front down to the lowest one: the geometric mean is
    # over the runs with a positive, finite figure, each such figure floored at a millionth of
    # the least positive one so a 0 counts as better than any loss without erasing the others.
    def geomean(values):
        values = [v for v in values if v is not None and v != float("inf")]
        if not values:
            return None
        positive = [v for v in values if v > 0]
        floor = min(positive) * 1e-6 if positive else 1e-300
        return math.exp(sum(math.log(max(v, floor)) for v in values) / len(values))

    def best_within(front, b):
        within = [p for p in front if p[0] <= b + 1e-9]
        return min(within, key=lambda p: p[1]) if within else None

    lo, hi = min(a.budgets), float(max(widths))
    rows = []
    for method, runs in fronts.items():
        areas = [staircase_area([(x, l) for x, l, _ in f], lo, hi) for f in runs]
        row = {"method": method, "evaluations": spent[method], "seconds": round(seconds[method], 1),
               "area_calib_kl": geomean(areas), "area_runs": sum(x != float("inf") for x in areas),
               "budgets": {}}
        for b in a.budgets:
            picked = [best_within(f, b) for f in runs]
            found = [p for p in picked if p is not None]
            if not found:
                row["budgets"][str(b)] = None
                continue
            held_out = [evaluate(bits, val) for _, _, bits in found]
            accuracies = [m.get("accuracy") for m in held_out]
            row["budgets"][str(b)] = {
                "avg_bits": [p[0] for p in found], "kl_calib": geomean(p[1] for p in found),
                "kl_calib_runs": [None if p is None else p[1] for p in picked], "runs": len(found),
                "kl_val": geomean(m["kl_fp32"] for m in held_out),
                "agreement_val": sum(m["agreement_fp32"] for m in held_out) / len(held_out),
                "accuracy_val": None if None in accuracies else sum(accuracies) / len(accuracies)}
        rows.append(row)
    # Runs in which search was at least as good as both baselines, per budget (no point within
    # the budget counts as worse than any).
    by = {r["method"]: r for r in rows}
    worst = lambda v: float("inf") if v is None else v
    for b in a.budgets:
        cells = [by[m]["budgets"][str(b)] for m in ["search", "proxy-only", "greedy"]]
        if cells[0] is None:
            continue
        n = len(a.evaluations)
        s_runs, p_runs, g_runs = ([None] * n if c is None else c["kl_calib_runs"] for c in cells)
        cells[0]["runs_at_least_as_good"] = sum(
            s is not None and s <= min(worst(p), worst(g)) for s, p, g in zip(s_runs, p_runs, g_runs))

    name = os.path.basename(os.path.normpath(folder))
    counts = ", ".join(map(str, a.evaluations))
    several = len(a.evaluations) > 1
    print(f"{name}: {len(layers)} layers, widths {widths}, {counts} evaluations per method and run")
    mean = "geometric mean over the runs of the " if several else ""
    for key, title in [("kl_calib", f"KL from fp32 ({mean}measured front's best point within each budget) on calib.npz"
                        + ("; in brackets, the runs in which search was at least as good as both baselines" if several else "")),
                       ("kl_val", "the same points on val.npz (held out); top-1 agreement with fp32 in brackets"
                        + (" (KL: geometric mean over the runs; agreement: mean)" if several else ""))]:
        print(title)
        print("| method | " + " | ".join(f"avg bits ≤ {b:g}" for b in a.budgets)
              + (f" | area under front [{lo:g}, {hi:g}] | evaluations | s per run |" if key == "kl_calib" else " |"))
        print("| --- " * (len(a.budgets) + (4 if key == "kl_calib" else 1)) + "|")
        for r in rows:
            cells = []
            for b in a.budgets:
                v = r["budgets"][str(b)]
                if v is None:
                    cells.append("none")
                elif key == "kl_val":
                    cells.append(f"{v['kl_val']:.3e} ({v['agreement_val']:.3f})")
                else:
                    won = v.get("runs_at_least_as_good")
                    short = f" [{v['runs']} runs with a point]" if several and v["runs"] < len(r["evaluations"]) else ""
                    cells.append(f"{v['kl_calib']:.3e}" + (f" ({won}/{len(a.evaluations)})" if several and won is not None else "") + short)
            area = "none" if r["area_calib_kl"] is None else f"{r['area_calib_kl']:.3e}"
            if r["area_calib_kl"] is not None and r["area_runs"] < len(r["evaluations"]):
                area += f" [{r['area_runs']} runs reach {lo:g}]"
            spent_ = ", ".join(map(str, r["evaluations"]))
            tail = f" | {area} | {spent_} | {r['seconds']} |" if key == "kl_calib" else " |"
            print(f"| {r['method']} | " + " | ".join(cells) + tail)
    print(json.dumps({"model": name, "evaluations": a.evaluations, "rows": rows}))


if __name__ == "__main__":
    main()
