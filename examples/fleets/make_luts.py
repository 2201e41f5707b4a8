"""Writes examples/fleets/resnet18-trio.fleet.json: a phone, an edge box and a server GPU with
per-layer latency lookup tables for examples/resnet18.manifest.json.

The tables are synthetic (no device was measured): each entry is a roofline time for the layer on
that device, times a fixed pseudo-random factor in [0.85, 1.15] per (device, layer, bits), so that
they behave like measured tables (not exactly monotone in MACs). Deterministic; rerun to regenerate.
"""
import json, random, os

here = os.path.dirname(os.path.abspath(__file__))
manifest = json.load(open(os.path.join(here, "..", "resnet18.manifest.json")))

def table(name, peak_gmac, bandwidth_gb, overhead_ms, bits):
    rng = random.Random(name)
    out = {}
    for layer in manifest["layers"]:
        row = {}
        for b in bits:
            # The narrowest listed unit at least b bits wide runs a b-bit op (weights and activations at b).
            unit = min(u for u in peak_gmac if u >= b)
            compute = layer["macs"] / (peak_gmac[unit] * 1e9) * 1e3
            memory = layer["params"] * b / 8 / (bandwidth_gb * 1e9) * 1e3
            row[str(b)] = round((max(compute, memory) + overhead_ms) * rng.uniform(0.85, 1.15), 6)
        out[layer["name"]] = row
    return out

fleet = {
    "name": "resnet18-trio",
    "devices": [
        {
            "name": "phone-npu",
            "latency_ms": table("phone-npu", {8: 1000, 4: 2000}, 15, 0.02, [8, 6, 4]),
            "budgets": {"max_size_bytes": 7000000, "max_latency_ms": 2.6},
            "weight_bits": [8, 6, 4],
            "activation_bits": [8, 6, 4],
            "high_bit_layers": ["conv1", "fc"],
        },
        {
            "name": "edge-box",
            "latency_ms": table("edge-box", {8: 4000, 4: 8000, 2: 16000}, 25, 0.01, [8, 4, 2]),
            "budgets": {"max_latency_ms": 0.55},
            "weight_bits": [8, 4, 2],
            "high_bit_layers": ["conv1"],
        },
        {
            "name": "server-gpu",
            "latency_ms": table("server-gpu", {8: 60000, 4: 120000}, 300, 0.005, [8, 6, 5, 4, 3, 2]),
            "budgets": {"max_avg_bits": 5.0},
        },
    ],
}
with open(os.path.join(here, "resnet18-trio.fleet.json"), "w") as f:
    json.dump(fleet, f, indent=1)
    f.write("\n")
