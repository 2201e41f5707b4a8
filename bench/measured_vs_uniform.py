#!/usr/bin/env python3
"""Plans from measured sensitivity against uniform bit-widths at the same average bits, as measured.

Usage: measured_vs_uniform.py BITPLAN MODEL_DIR [AVG_BITS ...]   (default 6 5 4)

MODEL_DIR holds model.onnx, calib.npz (sensitivity is measured on it) and val.npz (every
configuration is evaluated on it; a different set). Runs the real binary: `bitplan manifest --data`
once (kept as MODEL_DIR/manifest.json), then per average-bit budget `bitplan plan --max-avg-bits`
and `bitplan evaluate` of the plan and of uniform bits; with MODEL_DIR/hessian-manifest.json (a
manifest of Hessian traces for the same model), that manifest's plan too. Prints a Markdown table
and, last, one JSON line with every row.
"""
import json, os, subprocess, sys, tempfile, time


def run(*args):
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


def main():
    bitplan, folder = sys.argv[1], sys.argv[2]
    budgets = [float(b) for b in sys.argv[3:]] or [6.0, 5.0, 4.0]
    model, calib, val = (os.path.join(folder, f) for f in ("model.onnx", "calib.npz", "val.npz"))
    manifest = os.path.join(folder, "manifest.json")
    pass_s = None
    if not os.path.exists(manifest):
        t = time.perf_counter()
        text = run(bitplan, "manifest", model, "--data", calib)
        pass_s = time.perf_counter() - t
        with open(manifest, "w") as f:
            f.write(text)
    layers = [l["name"] for l in json.load(open(manifest))["layers"]]
    tmp = tempfile.mkdtemp()

    def measure(bits):
        path = os.path.join(tmp, "bits.json")
        json.dump(bits, open(path, "w"))
        return json.loads(run(bitplan, "evaluate", manifest, "--model", model, "--data", val,
                              "--bits", path, "--format", "json"))

    rows = []
    for b in budgets:
        if b == int(b):
            m = measure({l: int(b) for l in layers})
            rows.append({"config": f"uniform {int(b)}", "avg_bits": b, "agreement_fp32": m["agreement_fp32"],
                         "kl_fp32": m["kl_fp32"], "accuracy": m.get("accuracy")})
        hessian = os.path.join(folder, "hessian-manifest.json")
        for label, source in [("Hessian traces", hessian), ("measured sensitivity", manifest)]:
            if not os.path.exists(source):
                continue
            plan = json.loads(run(bitplan, "plan", source, "--max-avg-bits", str(b), "--format", "json"))
            c = plan["candidates"][0]
            m = measure(c["bits"])
            rows.append({"config": f"bitplan, {label}, max_avg_bits {b:g}", "avg_bits": c["avg_bits"],
                         "agreement_fp32": m["agreement_fp32"], "kl_fp32": m["kl_fp32"],
                         "accuracy": m.get("accuracy"), "bits": "".join(str(v) for v in c["bits"].values())})
    name = os.path.basename(os.path.normpath(folder))
    print(f"{name}: {len(layers)} layers" + (f", sensitivity pass {pass_s:.1f} s" if pass_s else ""))
    print("| configuration | avg bits | top-1 agreement with fp32 | KL(fp32‖quant) |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['config']} | {r['avg_bits']:.2f} | {r['agreement_fp32']:.3f} | {r['kl_fp32']:.4f} |")
    print(json.dumps({"model": name, "sensitivity_pass_s": pass_s, "rows": rows}))


if __name__ == "__main__":
    main()
