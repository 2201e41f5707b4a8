#!/usr/bin/env python3
"""Python baseline for the sensitivity pass: for each layer of a manifest and each of its bit-widths,
Double Rounding of that layer alone in NumPy (the rest fp32), rewrite the ONNX weight, serialise,
build an onnxruntime session (one thread), run the calibration set, and take the mean KL of the
output against fp32 (probabilities as they are when the output is a distribution, else softmax).

Usage: sensitivity_baseline.py MANIFEST.json MODEL.onnx CALIB.npz [BITS]   (BITS like 8,4,2;
default: each layer's own). Prints one JSON line: measurements, seconds, measurements per second,
and every value (to compare with bitplan's).
"""
import json, sys, time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def main():
    manifest = json.load(open(sys.argv[1]))
    model = onnx.load(sys.argv[2])
    x = np.load(sys.argv[3])["x"]
    only = [int(b) for b in sys.argv[4].split(",")] if len(sys.argv) > 4 else None
    high = max(manifest["bits"])
    ties_even = manifest.get("rounding") == "half_to_even"
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    consumer = {}
    for n in g.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(n.input) > 1:
            consumer.setdefault(n.input[1], n)

    def tensor_of(name):
        if name in inits:
            return inits[name]
        return next(a.t for a in consts[name].attribute if a.name == "value")

    def channel_axis(node, w):
        if node.op_type == "Conv":
            return 0
        if node.op_type == "ConvTranspose":
            return 1
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            return 0 if trans_b else 1
        return w.ndim - 1  # MatMul [.., in, out]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    input_name = next(i.name for i in g.input if i.name not in inits)

    def run(m):
        s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return s.run(None, {input_name: x})[0].astype(np.float64)

    def log_dist(z, probabilities):
        if probabilities:
            return np.log(np.maximum(z, 1e-12))
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    started = time.perf_counter()
    reference = run(model)
    probabilities = bool((reference >= 0).all() and np.allclose(reference.sum(axis=1), 1, atol=1e-3))
    lp = log_dist(reference, probabilities)
    values, count = {}, 0
    for layer in manifest["layers"]:
        t = tensor_of(layer["weight"])
        w = numpy_helper.to_array(t).astype(np.float32)
        axis = channel_axis(consumer[layer["weight"]], w)
        moved = np.moveaxis(w, axis, 0)
        flat = moved.reshape(moved.shape[0], -1)
        qmax = 2 ** (high - 1) - 1
        s = np.abs(flat).max(axis=1) / qmax
        s[s == 0] = 1
        q = np.clip(np.round(flat / s[:, None]), -qmax, qmax).astype(np.int64)
        values[layer["name"]] = {}
        for b in layer.get("bits", manifest["bits"]):
            if only and b not in only:
                continue
            k = high - b
            if k == 0:
                lower = q
            elif ties_even:
                lower = np.round(q / (1 << k)).astype(np.int64)
            else:
                lower = np.sign(q) * ((np.abs(q) + (1 << (k - 1))) >> k)
            bq = 2 ** (b - 1) - 1
            deq = (np.clip(lower, -bq, bq) * (s * (1 << k))[:, None]).astype(np.float32)
            new = np.moveaxis(deq.reshape(moved.shape), 0, axis)
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), t.name))
            out = run(model)
            lq = log_dist(out, probabilities)
            values[layer["name"]][str(b)] = float((np.exp(lp) * (lp - lq)).sum(axis=1).clip(min=0).mean())
            count += 1
        t.CopyFrom(numpy_helper.from_array(w, t.name))
    seconds = time.perf_counter() - started
    print(json.dumps({"measurements": count, "seconds": seconds, "per_s": count / seconds, "values": values}))


if __name__ == "__main__":
    main()
