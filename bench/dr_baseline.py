#!/usr/bin/env python3
"""NumPy Double Rounding (ties away from zero): b-bit fp32 weights from an 8-bit store, GB/s of fp32
weights produced. Usage: dr_baseline.py [MILLION_WEIGHTS]. Prints one JSON line."""
import json, sys, time
import numpy as np

n = int(sys.argv[1] if len(sys.argv) > 1 else 16) << 20
rng = np.random.default_rng(1)
q = rng.integers(-127, 128, size=n, dtype=np.int32)
out = {}
for layout, shape, axis in [("conv [out, in*kh*kw]", (2048, n // 2048), 0), ("matmul [in, out]", (n // 2048, 2048), 1)]:
    qq = q.reshape(shape)
    s = rng.uniform(1e-3, 1e-1, size=2048).astype(np.float32)
    s = s[:, None] if axis == 0 else s[None, :]
    b, k = 4, 4
    def derive():
        m = (np.abs(qq) + (1 << (k - 1))) >> k
        return np.clip(np.sign(qq) * m, -(2 ** (b - 1) - 1), 2 ** (b - 1) - 1).astype(np.float32) * (s * (1 << k))
    derive()
    t = time.perf_counter()
    for _ in range(3):
        derive()
    out[layout] = 3 * n * 4 / (time.perf_counter() - t) / 1e9
print(json.dumps(out))
