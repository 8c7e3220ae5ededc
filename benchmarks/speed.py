"""Speed of the NumPy integer runtime against onnxruntime running the float ONNX model.

    .venv/bin/python benchmarks/speed.py [--n 256 --t 100 --i 16 --h 64]

Same batch for both, same 2 threads; prints the median of several runs and the ratio. Target (issue 3):
the integer runtime at most 3x slower than onnxruntime float.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import grukit
from grukit.export.onnx_export import export_onnx_sequence
from grukit.model import Dense, GRUDirection, GRULayer, GRUModel

REPEATS = 5
TARGET_RATIO = 3.0


def random_model(I: int, H: int, O: int, seed: int = 0) -> GRUModel:
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(H)
    d = GRUDirection(W=rng.uniform(-s, s, (3, H, I)), R=rng.uniform(-s, s, (3, H, H)),
                     Wb=rng.uniform(-s, s, (3, H)), Rb=rng.uniform(-s, s, (3, H)))
    head = Dense(W=rng.uniform(-s, s, (O, H)), b=np.zeros(O))
    return GRUModel(layers=(GRULayer(d, 1),), head=head, name=f"random I={I} H={H}")


def median_time(fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--t", type=int, default=100)
    ap.add_argument("--i", type=int, default=16)
    ap.add_argument("--h", type=int, default=64)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    model = random_model(args.i, args.h, 4)
    x = np.random.default_rng(1).standard_normal((args.n, args.t, args.i)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx_sequence(model, Path(tmp) / "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        t_ort = median_time(lambda: sess.run(None, {name: x}))
    print(f"batch {args.n} sequences x {args.t} steps, I={args.i}, H={args.h}, threads: 2")
    print(f"  onnxruntime float:            {1e3 * t_ort:8.1f} ms")
    for scheme in ("int8", "16x8"):
        q = grukit.quantize(model, x[:64], scheme=scheme)
        x_q = q.quantize_input(x)
        t_int = median_time(lambda: q.predict_int(x_q))
        print(f"  grukit integer runtime {scheme:5s}: {1e3 * t_int:8.1f} ms   ({t_int / t_ort:.2f}x onnxruntime)")
    print(f"target: the integer runtime at most {TARGET_RATIO:g}x onnxruntime float (compare ratios, not times: "
          "absolute times drift with the machine)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
