#!/usr/bin/env python3
"""Python baseline for evaluation throughput: for each candidate (distinct configurations in a
seeded random order), Double Rounding in NumPy, rewrite the ONNX initializers, serialise, build an
onnxruntime session, run the validation set.

Usage: eval_baseline.py N   (from the repository root). Prints one JSON line.
"""
import json, sys, time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

N = int(sys.argv[1])
root = "."
manifest = json.load(open(f"{root}/examples/digits-cnn.manifest.json"))
model = onnx.load(f"{root}/testdata/digits-cnn/digits_cnn.onnx")
data = np.load(f"{root}/testdata/digits-cnn/digits_val.npz")
x, y = data["x"], data["y"]
inits = {t.name: i for i, t in enumerate(model.graph.initializer)}
H = max(manifest["bits"])

# The highest-bit store, per output channel (axis 0 for Conv and Gemm with transB=1).
store = {}
for l in manifest["layers"]:
    w = numpy_helper.to_array(model.graph.initializer[inits[l["weight"]]]).astype(np.float32)
    flat = w.reshape(w.shape[0], -1)
    s = np.abs(flat).max(axis=1) / (2 ** (H - 1) - 1)
    s[s == 0] = 1
    q = np.clip(np.round(flat / s[:, None]), -(2 ** (H - 1) - 1), 2 ** (H - 1) - 1).astype(np.int32)
    store[l["name"]] = (q, s.astype(np.float32), w.shape)


def lower(q, k, b):
    if k == 0:
        return q
    m = (np.abs(q) + (1 << (k - 1))) >> k  # ties away from zero
    return np.clip(np.sign(q) * m, -(2 ** (b - 1) - 1), 2 ** (b - 1) - 1)


import itertools
choices = [[l["pin"]] if "pin" in l else l.get("bits", manifest["bits"]) for l in manifest["layers"]]
configs = list(itertools.product(*choices))
np.random.default_rng(7).shuffle(configs)
N = min(N, len(configs))
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
t = time.perf_counter()
acc = 0.0
for config in configs[:N]:
    for l, b in zip(manifest["layers"], config):
        q, s, shape = store[l["name"]]
        k = H - b
        w = (lower(q, k, b).astype(np.float32) * (s * (1 << k))[:, None]).reshape(shape)
        model.graph.initializer[inits[l["weight"]]].CopyFrom(numpy_helper.from_array(w, l["weight"]))
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x})[0]
    acc += float((logits.argmax(1) == y).mean())
s = time.perf_counter() - t
print(json.dumps({"candidates_per_s": N / s, "mean_accuracy": acc / N}))
