#!/usr/bin/env python3
"""The sensitivity pass, bitplan against the Python loop (sensitivity_baseline.py), same model, same
calibration set, same bit-widths, one thread each; also bitplan's peak memory.

Usage: sensitivity_bench.py BITPLAN MODEL_DIR BITS      (MODEL_DIR with model.onnx and calib.npz;
BITS like 8,4,2). Prints a summary line, then one JSON line.
"""
import json, os, resource, subprocess, sys, time


def main():
    bitplan, folder, bits = sys.argv[1], sys.argv[2], sys.argv[3]
    model, calib = os.path.join(folder, "model.onnx"), os.path.join(folder, "calib.npz")
    manifest = os.path.join(folder, f"manifest-{bits.replace(',', '')}.json")
    t = time.perf_counter()
    with open(manifest, "w") as out:
        subprocess.run([bitplan, "manifest", model, "--data", calib, "--bits", bits, "--threads", "1"],
                       stdout=out, stderr=subprocess.DEVNULL, check=True)
    rust_s = time.perf_counter() - t
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    doc = json.load(open(manifest))
    here = os.path.dirname(os.path.abspath(__file__))
    py = json.loads(subprocess.run([sys.executable, os.path.join(here, "sensitivity_baseline.py"), manifest, model,
                                    calib, bits], check=True, capture_output=True, text=True).stdout)
    n = sum(len(l["sensitivity"]) for l in doc["layers"])
    assert n == py["measurements"], (n, py["measurements"])
    worst = max(abs(py["values"][l["name"]][b] - v) / max(abs(v), 1e-6)
                for l in doc["layers"] for b, v in l["sensitivity"].items())
    # What skipping the layers before each measured one saves in compute: the whole model's MACs
    # per measurement against the MACs from the measured layer on (layers in graph order).
    macs = [l["macs"] for l in doc["layers"]]
    suffix = [sum(macs[i:]) for i in range(len(macs))]
    ideal = n * sum(macs) / sum(len(l["sensitivity"]) * suffix[i] for i, l in enumerate(doc["layers"]))
    name = os.path.basename(os.path.normpath(folder))
    print(f"{name}: {len(doc['layers'])} layers x bits {bits} = {n} measurements: bitplan {rust_s:.1f} s "
          f"({n / rust_s:.2f}/s, peak RSS {peak_mib:.0f} MiB), python {py['seconds']:.1f} s ({py['per_s']:.2f}/s), "
          f"ratio {py['seconds'] / rust_s:.2f}x (MACs of the whole model against MACs from each layer on: {ideal:.2f}x); "
          f"largest relative difference of the values {worst:.1e}")
    print(json.dumps({"model": name, "measurements": n, "bitplan_s": rust_s, "python_s": py["seconds"],
                      "ratio": py["seconds"] / rust_s, "ideal_ratio": ideal, "peak_rss_mib": peak_mib, "max_rel_diff": worst}))


if __name__ == "__main__":
    main()
