#!/usr/bin/env python3
"""How much of a model's measured loss an objective linear per choice can explain, measured.

Usage: search_structure.py BITPLAN MODEL_DIR [--evaluations N]

MODEL_DIR as for search_vs_baselines.py (model.onnx, calib.npz, val.npz, manifest.json with the
measured single-layer sensitivities). The configurations measured by `bitplan search` with each
method (search, proxy-only, greedy; N evaluations each) are pooled and evaluated on val.npz too.
For each range of average bits it reports:

- whether the differences between configurations are real: the rank correlation of their KL on
  calib.npz and on the held-out val.npz;
- how well the starting objective predicts them under a fitted link (log KL linear in the log of
  the summed sensitivities), and that link plus a term per (layer, bit-width) fitted to the
  residuals by ridge regression (the most an objective linear per choice can add): the root mean
  square error in log KL of 10-fold cross-validated predictions, and their rank correlation;
- how alike the residuals (log KL off the link) of two configurations are, against the number of
  layers whose bit-width differs: the mean absolute difference (independent draws give about
  1.13 times the residuals' standard deviation).

Prints Markdown tables and, last, one JSON line with every figure.
"""
import argparse, json, math, os, subprocess, tempfile

import numpy as np


def run(*args):
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


def ranks(v):
    return np.argsort(np.argsort(v)).astype(float)


def spearman(a, b):
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1]) if len(a) > 2 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bitplan")
    ap.add_argument("folder")
    ap.add_argument("--evaluations", type=int, default=40)
    ap.add_argument("--ridge", type=float, default=1.0)
    a = ap.parse_args()
    model, calib, val, manifest = (os.path.join(a.folder, f)
                                   for f in ("model.onnx", "calib.npz", "val.npz", "manifest.json"))
    doc = json.load(open(manifest))
    sens = {l["name"]: l.get("sensitivity") for l in doc["layers"]}
    if any(s is None for s in sens.values()):
        raise SystemExit(f"{manifest}: every layer needs its measured sensitivity (bitplan manifest --data)")

    pool = {}
    for method in ["search", "proxy-only", "greedy"]:
        out = json.loads(run(a.bitplan, "search", manifest, "--model", model, "--data", calib,
                             "--pareto", "avg_bits", "--evaluations", str(a.evaluations),
                             "--method", method, "--metric", "kl", "--format", "json"))
        for p in out["points"]:
            pool[json.dumps(p["bits"], sort_keys=True)] = p
    points = [p for p in pool.values() if p["loss"] > 0]  # the loss is the KL on calib.npz
    tmp = tempfile.mkdtemp()
    for p in points:
        path = os.path.join(tmp, "bits.json")
        with open(path, "w") as f:
            json.dump(p["bits"], f)
        p["kl_val"] = json.loads(run(a.bitplan, "evaluate", manifest, "--model", model, "--data", val,
                                     "--bits", path, "--format", "json"))["kl_fp32"]

    layers = sorted(points[0]["bits"])
    bits = np.array([[p["bits"][l] for l in layers] for p in points])
    avg = np.array([p["avg_bits"] for p in points])
    y = np.log([p["loss"] for p in points])
    y_val = np.log([max(p["kl_val"], 1e-12) for p in points])
    summed = np.log([sum(sens[l][str(p["bits"][l])] for l in layers) for p in points])
    columns = sorted({(i, b) for row in bits for i, b in enumerate(row)})
    index = {c: j for j, c in enumerate(columns)}
    onehot = np.zeros((len(points), len(columns)))
    for r, row in enumerate(bits):
        for i, b in enumerate(row):
            onehot[r, index[(i, b)]] = 1.0

    # 10-fold cross-validated predictions: the link alone, and the link plus per-choice terms.
    order = np.random.default_rng(0).permutation(len(points))
    link, terms = np.zeros(len(points)), np.zeros(len(points))
    for fold in range(10):
        test = order[fold::10]
        train = np.setdiff1d(order, test)
        coef = np.polyfit(summed[train], y[train], 1)
        link[test] = np.polyval(coef, summed[test])
        residual = y[train] - np.polyval(coef, summed[train])
        x = onehot[train]
        w = np.linalg.solve(x.T @ x + a.ridge * np.eye(len(columns)), x.T @ residual)
        terms[test] = link[test] + onehot[test] @ w

    ranges = [(2.0, 4.5), (4.5, 99.0), (2.0, 99.0)]
    rows = []
    for lo, hi in ranges:
        s = (avg >= lo) & (avg < hi)
        rmse = lambda p: float(np.sqrt(np.mean((p[s] - y[s]) ** 2)))
        rows.append({"avg_bits": [lo, hi], "configurations": int(s.sum()),
                     "log_kl_sd": float(y[s].std()),
                     "spearman_calib_val": spearman(y[s], y_val[s]),
                     "link": {"rmse": rmse(link), "spearman": spearman(link[s], y[s])},
                     "link_and_terms": {"rmse": rmse(terms), "spearman": spearman(terms[s], y[s])}})
    residual = y - np.polyval(np.polyfit(summed, y, 1), summed)
    near = {}
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            d = int((bits[i] != bits[j]).sum())
            near.setdefault(min(d // 3, 6), []).append(abs(residual[i] - residual[j]))
    alike = [{"layers_differing": [3 * k, 3 * k + 2] if k < 6 else [18, None], "pairs": len(v),
              "mean_abs_residual_difference": float(np.mean(v))} for k, v in sorted(near.items())]

    name = os.path.basename(os.path.normpath(a.folder))
    print(f"{name}: {len(points)} configurations measured by search, proxy-only and greedy "
          f"({a.evaluations} evaluations each); log KL on calib.npz")
    print("| avg bits | configurations | sd | Spearman calib~val | link: RMSE, Spearman | link + terms: RMSE, Spearman |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        lo, hi = r["avg_bits"]
        print(f"| [{lo:g}, {'max' if hi > 90 else f'{hi:g}'}) | {r['configurations']} | {r['log_kl_sd']:.2f} | "
              f"{r['spearman_calib_val']:.2f} | {r['link']['rmse']:.2f}, {r['link']['spearman']:.2f} | "
              f"{r['link_and_terms']['rmse']:.2f}, {r['link_and_terms']['spearman']:.2f} |")
    print(f"residuals off the link: sd {residual.std():.2f}; mean absolute difference of two configurations' residuals")
    print("| layers differing | pairs | mean abs difference |")
    print("| --- | --- | --- |")
    for r in alike:
        lo, hi = r["layers_differing"]
        print(f"| {lo}{'+' if hi is None else f'-{hi}'} | {r['pairs']} | {r['mean_abs_residual_difference']:.2f} |")
    print(json.dumps({"model": name, "evaluations": a.evaluations, "ranges": rows,
                      "residual_sd": float(residual.std()), "alike": alike}))


if __name__ == "__main__":
    main()
