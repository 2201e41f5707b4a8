#!/usr/bin/env python3
"""Output-linearized surrogate against bitplan's search and its baselines, as measured.

Usage: linearized_surrogate.py BITPLAN OUTPUT_LOGITS MODEL_DIR [--evaluations N]
                               [--budgets 6 5 4.5 4 3] [--interaction G] [--exhaustive-limit K]

An experiment, not a bitplan method. MODEL_DIR holds model.onnx, calib.npz and val.npz (as
search_vs_baselines.py). Needs numpy and scipy. OUTPUT_LOGITS is the `output_logits` example
(cargo build --release --workspace --example output_logits).

The single-layer sensitivity pass runs every layer alone at each width and keeps one number: the
KL of that run's output from fp32. Added up, those numbers cannot say that two layers' errors
cancel or compound. This keeps the runs' outputs instead (the same runs: no evaluation of a
configuration) and predicts a configuration's output as fp32's log-probabilities plus the sum of
its layers' single-layer changes to them, and its loss by the second-order KL of that from fp32:
half the squared norm of the sum of each layer's change whitened by fp32's softmax Fisher,
u = sqrt(p) * (d - p.d), averaged over samples. Every pair of layers interacts through the sum
(cross terms u_l . u_m, negative where their errors cancel); --interaction G keeps a share G of
the cross terms (1: all, 0: the summed single-layer terms alone).

Methods, each measuring at most N configurations on calib.npz:
- linearized: with at most --exhaustive-limit configurations, the surrogate's exact front, N
  points spread along it by rank; else the greedy path on the surrogate (lower, one step at a
  time, the layer whose next width adds least predicted KL per bit saved; a step may lower the
  prediction), N points spread along it by average bits, each improved by single- and
  paired-layer moves that lower the prediction within its average bits; with --optimizer mm,
  at N budgets spread from the highest width to the lowest, exact knapsack DPs on a separable
  bound of the surrogate (majorize-minimize) from the summed single-layer terms' exact point;
- search, proxy-only, greedy: `bitplan search --method ...` with the same N.
For each method and budget, the measured point of least KL on calib.npz within the budget, and
that point's KL on val.npz (held out); the area under each measured front on calib.npz
(staircase, from the least budget to 8 bits). Also how well each proxy orders every configuration
the methods measured (Spearman), over all of them and within half-bit bands of average bits.
Each method runs once per call: where a method's points fall under a budget moves its cells
(search_vs_baselines.py runs five counts for that reason), so one call compares one draw each.
Prints Markdown, then one JSON line.
"""
import argparse, atexit, hashlib, itertools, json, os, shutil, subprocess, sys, tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search_vs_baselines import staircase_area  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("bitplan")
ap.add_argument("output_logits")
ap.add_argument("folder")
ap.add_argument("--evaluations", type=int, default=40)
ap.add_argument("--budgets", type=float, nargs="+", default=[6, 5, 4.5, 4, 3])
ap.add_argument("--interaction", type=float, default=1.0)
ap.add_argument("--exhaustive-limit", type=int, default=50000)
ap.add_argument("--optimizer", choices=["greedy", "mm"], default="greedy")
a = ap.parse_args()
if not 0 <= a.interaction <= 1:
    ap.error("--interaction: must be within [0, 1] (the share of the cross terms kept)")
folder = a.folder
model, calib, val, manifest_path = (os.path.join(folder, f) for f in ("model.onnx", "calib.npz", "val.npz", "manifest.json"))
if not os.path.exists(manifest_path):
    out = subprocess.run([a.bitplan, "manifest", model, "--data", calib], check=True, capture_output=True, text=True).stdout
    open(manifest_path, "w").write(out)
manifest = json.load(open(manifest_path))
names = [l["name"] for l in manifest["layers"]]
# The widths each layer may take, highest first (a pinned layer: its pin alone).
free = [[l["pin"]] if l.get("pin") is not None else sorted(l.get("bits") or manifest["bits"], reverse=True)
        for l in manifest["layers"]]
params = np.array([l["params"] for l in manifest["layers"]], float)
lib = os.environ["BITPLAN_ORT_LIB"]
tmp = tempfile.mkdtemp()
atexit.register(shutil.rmtree, tmp, ignore_errors=True)


def avg_bits(c):
    return float((params * np.array(c)).sum() / params.sum())


def log_probs(z, probabilities):
    """Log-probabilities of outputs that are probabilities already, or of logits."""
    if probabilities:
        return np.log(np.clip(z, 1e-12, None))
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def outputs(configs, data):
    """fp32's log-probabilities on `data`, [samples, classes], and each configuration's,
    [configs, samples, classes]. Whether the model outputs probabilities or logits is decided
    once, from fp32's output (rows of non-negative numbers summing to 1), as bitplan does."""
    path = os.path.join(tmp, "configs.json")
    json.dump([[0] * len(names)] + [[int(b) for b in c] for c in configs], open(path, "w"))
    out = subprocess.run([a.output_logits, lib, model, manifest_path, data, path], check=True, capture_output=True, text=True).stdout
    with np.load(data) as arrays:
        n = len(arrays[next(iter(arrays.keys()))])
    z = np.array(json.loads(out), dtype=np.float64).reshape(len(configs) + 1, n, -1)
    probabilities = bool(np.all(z[0] >= 0) and np.allclose(z[0].sum(-1), 1, atol=1e-3))
    lp = np.array([log_probs(x, probabilities) for x in z])
    return lp[0], lp[1:]


def kl(l0, l1):
    """Mean KL(p0 || p1) over samples, from log-probabilities."""
    return float(np.mean(np.sum(np.exp(l0) * (l0 - l1), -1)))


# The single-layer runs' outputs on calib (runs like the sensitivity pass's, made again here and
# not counted as evaluations), cached beside the model under a key of the manifest's layers and
# widths and of the calibration file, so a changed manifest or set is run again.
singles = [[b if j == i else 0 for j in range(len(names))] for i, ch in enumerate(free) for b in ch]
key = hashlib.sha1(json.dumps([names, free, os.path.getsize(calib), os.path.getmtime(calib)]).encode()).hexdigest()[:12]
cache = os.path.join(folder, f"single_outputs-{key}.npy")
if not os.path.exists(cache):
    fp32, changed = outputs(singles, calib)
    np.save(cache, np.concatenate([fp32[None], changed]))
L = np.load(cache)
l0 = L[0]
delta, k = {}, 1
for i, ch in enumerate(free):
    for b in ch:
        delta[(i, b)] = L[k] - l0
        k += 1
single_kl = {choice: kl(l0, l0 + d) for choice, d in delta.items()}
samples = l0.shape[0]
p0 = np.exp(l0)
# Whitened changes, and with --interaction G < 1 a block of their own per layer carrying (1 - G)
# of each squared norm: the squared norm of a sum of these is G |sum u|^2 + (1 - G) sum |u|^2.
g = a.interaction
width = l0.size
vec = {}
for (i, b), d in delta.items():
    u = (np.sqrt(p0) * (d - (p0 * d).sum(-1, keepdims=True))).ravel()
    v = np.zeros(width * (1 + (len(names) if g < 1 else 0)))
    v[:width] = np.sqrt(g) * u
    if g < 1:
        v[width * (i + 1):width * (i + 2)] = np.sqrt(1 - g) * u
    vec[(i, b)] = v


def predict(total):
    return 0.5 * float(total @ total) / samples


def linearized(c):
    return predict(sum(vec[(i, b)] for i, b in enumerate(c)))


def additive(c):
    return sum(single_kl[(i, b)] for i, b in enumerate(c))


def greedy_path():
    c = [ch[0] for ch in free]
    D = sum(vec[(i, b)] for i, b in enumerate(c))
    now = predict(D)
    path = [list(c)]
    while True:
        best = None
        for i, ch in enumerate(free):
            j = ch.index(c[i])
            if j + 1 == len(ch):
                continue
            v = predict(D - vec[(i, c[i])] + vec[(i, ch[j + 1])])
            rate = (v - now) / (params[i] * (c[i] - ch[j + 1]))
            if best is None or rate < best[0]:
                best = (rate, i, ch[j + 1], v)
        if best is None:
            return path[::-1]  # cheapest first
        _, i, b, now = best
        D = D - vec[(i, c[i])] + vec[(i, b)]
        c[i] = b
        path.append(list(c))


def polish(c):
    """Single-layer moves, then paired ones (one layer up a step, another down), that lower the
    prediction without raising the average bits, best first, until none does."""
    c, budget = list(c), avg_bits(c)
    D = sum(vec[(i, b)] for i, b in enumerate(c))
    now = predict(D)
    movable = [i for i in range(len(c)) if len(free[i]) > 1]
    while True:
        best = None
        for i in movable:
            for b in free[i]:
                if b != c[i] and avg_bits(c[:i] + [b] + c[i + 1:]) <= budget + 1e-9:
                    v = predict(D - vec[(i, c[i])] + vec[(i, b)])
                    if v < now - 1e-15 and (best is None or v < best[0]):
                        best = (v, [(i, b)])
        if best is None:
            for i in movable:
                ji = free[i].index(c[i])
                if ji == 0:
                    continue
                up = free[i][ji - 1]
                Di = D - vec[(i, c[i])] + vec[(i, up)]
                for j in movable:
                    for b in free[j][free[j].index(c[j]) + 1:] if j != i else []:
                        moved = list(c)
                        moved[i], moved[j] = up, b
                        if avg_bits(moved) <= budget + 1e-9:
                            v = predict(Di - vec[(j, c[j])] + vec[(j, b)])
                            if v < now - 1e-15 and (best is None or v < best[0]):
                                best = (v, [(i, up), (j, b)])
        if best is None:
            return c
        for i, b in best[1]:
            D = D - vec[(i, c[i])] + vec[(i, b)]
            c[i] = b
        now = best[0]


def dp(terms, budget, unit):
    """The exact minimum of a separable objective (a term per layer and width) within an average
    bit-width budget, costs in units of `unit` parameter-bits (rounded): a knapsack DP."""
    top = int(budget * params.sum() / unit) + 1
    best = np.full(top + 1, np.inf)
    best[0] = 0.0
    back = []
    for i in range(len(names)):
        now, arg = np.full(top + 1, np.inf), np.full(top + 1, -1)
        for j, b in enumerate(free[i]):
            c = int(round(params[i] * b / unit))
            if c > top:
                continue
            shifted = np.full(top + 1, np.inf)
            shifted[c:] = best[:top + 1 - c] + terms[(i, b)]
            better = shifted < now
            now[better], arg[better] = shifted[better], j
        back.append(arg)
        best = now
    e, c = int(np.argmin(best)), []
    for i in range(len(names) - 1, -1, -1):
        b = free[i][back[i][e]]
        c.append(b)
        e -= int(round(params[i] * b / unit))
    return c[::-1]


def majorize_minimize(budget):
    """From the exact point of the summed single-layer terms at `budget`, lower the surrogate by
    exact DP steps. With S the current sum of the layers' vectors and D_l = v_new - v_old a
    layer's move, |S + sum D_l|^2 is at most |S|^2 + sum (2 S.D_l + K |D_l|^2) when K is at least
    the number of layers moved: one term per layer and width, which the DP minimizes. K doubles
    while a step does not lower the prediction and halves after one that does."""
    unit = max(1.0, params.sum() * 8 / 6000)
    own = {choice: v @ v for choice, v in vec.items()}
    c, k = dp(own, budget, unit), 1.0
    while k <= 64:
        S = sum(vec[(i, b)] for i, b in enumerate(c))
        terms = {}
        for i in range(len(names)):
            for b in free[i]:
                step = vec[(i, b)] - vec[(i, c[i])]
                terms[(i, b)] = 2 * S @ step + k * step @ step
        nxt = dp(terms, budget, unit)
        if linearized(nxt) < linearized(c) * (1 - 1e-12):
            c, k = nxt, max(1.0, k / 2)
        else:
            k *= 2
    return c


if np.prod([len(ch) for ch in free], dtype=float) <= a.exhaustive_limit:
    # Few enough configurations: the surrogate's exact front, N points spread along it by rank.
    configurations = sorted((avg_bits(c), linearized(c), list(c)) for c in itertools.product(*free))
    front, least = [], float("inf")
    for x, loss, c in configurations:
        if loss < least:
            least = loss
            front.append(c)
    picked = [front[i] for i in sorted(set(np.linspace(0, len(front) - 1, a.evaluations).round().astype(int)))]
elif a.optimizer == "mm":
    picked = []
    for budget in np.linspace(max(max(ch) for ch in free), min(min(ch) for ch in free), a.evaluations):
        c = majorize_minimize(budget)
        if c not in picked:
            picked.append(c)
else:
    path = greedy_path()
    costs = [avg_bits(c) for c in path]
    picked = []
    for target in np.linspace(costs[0], costs[-1], a.evaluations):
        c = polish(path[max(i for i, x in enumerate(costs) if x <= target + 1e-9)])
        if c not in picked:
            picked.append(c)
points = {"linearized": [(avg_bits(c), kl(l0, l), c) for c, l in zip(picked, outputs(picked, calib)[1])]}
for method in ["search", "proxy-only", "greedy"]:
    out = json.loads(subprocess.run([a.bitplan, "search", manifest_path, "--model", model, "--data", calib, "--pareto", "avg_bits",
                                     "--evaluations", str(a.evaluations), "--method", method, "--format", "json"],
                                    check=True, capture_output=True, text=True).stdout)
    points[method] = [(p["avg_bits"], p["loss"], [p["bits"][n] for n in names]) for p in out["points"]]

# Held out: each method's pick at each budget, measured on val.
picks = {m: {} for m in points}
for m, pts in points.items():
    for b in a.budgets:
        within = [p for p in pts if p[0] <= b + 1e-9]
        picks[m][b] = min(within, key=lambda p: p[1]) if within else None
configs = [p[2] for m in picks for p in picks[m].values() if p]
val_fp32, val_out = outputs(configs, val)
val_kl = {json.dumps(c): kl(val_fp32, l) for c, l in zip(configs, val_out)}

from scipy.stats import spearmanr  # noqa: E402
# Every configuration measured (once, whichever methods measured it). Over all of them the bit
# count alone sets most of the order, so also: within bands of half a bit of average bits (the
# choice a budget leaves), the mean Spearman over bands of at least 5 points, weighted by size.
unique = {json.dumps(p[2]): p for pts in points.values() for p in pts}
every = list(unique.values())
proxies = {"additive (single-layer KL summed)": additive, "linearized": linearized}


def order(proxy, pts):
    return spearmanr([proxy(p[2]) for p in pts], [p[1] for p in pts])[0]


bands = {}
for p in every:
    bands.setdefault(int(p[0] // 0.5), []).append(p)
bands = [b for b in bands.values() if len(b) >= 5]
ordering = {name: {"all": order(f, every),
                   "within half a bit": sum(len(b) * order(f, b) for b in bands) / max(1, sum(map(len, bands)))}
            for name, f in proxies.items()}

print(f"{os.path.basename(os.path.normpath(folder))}: {len(names)} layers, {a.evaluations} evaluations per method, interaction {g:g}")
print("Spearman of each proxy with the KL measured on calib.npz, over the %d configurations measured "
      "(within half-bit bands, %d of them in %d bands): %s" % (
          len(every), sum(map(len, bands)), len(bands),
          ", ".join(f"{k} {v['all']:.3f} ({v['within half a bit']:.3f})" for k, v in ordering.items())))
print("| method | " + " | ".join(f"≤ {b:g} bits calib (val)" for b in a.budgets) + " | area [%g, 8] | evaluations |" % min(a.budgets))
print("| --- " * (len(a.budgets) + 3) + "|")
rows = {}
for m, pts in points.items():
    cells = []
    for b in a.budgets:
        p = picks[m][b]
        cells.append(None if p is None else (p[1], val_kl[json.dumps(p[2])]))
    area = staircase_area([(x, l) for x, l, _ in pts], min(a.budgets), 8.0)
    rows[m] = {"cells": cells, "area": area, "evaluations": len(pts)}
    print(f"| {m} | " + " | ".join("none" if c is None else f"{c[0]:.2e} ({c[1]:.2e})" for c in cells) + f" | {area:.3e} | {len(pts)} |")
print(json.dumps({"model": os.path.basename(os.path.normpath(folder)), "interaction": g, "budgets": a.budgets, "spearman": ordering, "rows": rows}))
