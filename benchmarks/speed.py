"""Speed of the integer runtime against onnxruntime running the float ONNX model.

    .venv/bin/python benchmarks/speed.py [--n 256 --t 100 --i 16 --h 64 --rounds 9 --workers 2]

Same batch for both, on the same cores: onnxruntime with --workers intra-op threads, the integer runtime
split across --workers processes (grukit.runtime.workers; default: every usable CPU) and, for comparison,
in one process. onnxruntime's threads do not spin-wait after a run here: spinning threads would hold the
cores the next runtime timed needs (its own time is the same either way, within noise). Rounds are
interleaved (onnxruntime, then each integer runtime, then again), each runtime timed warm within a round
(the median of 3 back-to-back calls after an untimed one), so that both sides of each ratio see the same
machine: shared VMs drift by more than the margins measured here. Prints the median time of each and the
median and range of the per-round ratios. Target (issue 3): the integer runtime at most 3x slower than
onnxruntime float.
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
from grukit.core.model import GRUDirection, GRULayer, GRUModel, Head
from grukit.runtime.workers import worker_count

ROUNDS = 9
REPEATS = 3
TARGET_RATIO = 3.0


def random_model(I: int, H: int, O: int, seed: int = 0) -> GRUModel:
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(H)
    d = GRUDirection(W=rng.uniform(-s, s, (3, H, I)), R=rng.uniform(-s, s, (3, H, H)),
                     Wb=rng.uniform(-s, s, (3, H)), Rb=rng.uniform(-s, s, (3, H)))
    head = Head.dense(rng.uniform(-s, s, (O, H)), np.zeros(O))
    return GRUModel(layers=(GRULayer(d, 1),), head=head, name=f"random I={I} H={H}")


def warm_seconds(fn) -> float:
    """The median of REPEATS back-to-back calls after one untimed call (caches, thread pools warm)."""
    fn()
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
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--workers", type=int, default=None, help="processes / threads (default: every usable CPU)")
    args = ap.parse_args(argv)
    workers = worker_count(args.workers)
    import onnxruntime as ort

    model = random_model(args.i, args.h, 4)
    x = np.random.default_rng(1).standard_normal((args.n, args.t, args.i)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx_sequence(model, Path(tmp) / "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = workers
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    runs = {"onnxruntime float": lambda: sess.run(None, {name: x})}
    for scheme in ("int8", "16x8"):
        q = grukit.quantize(model, x[:64], scheme=scheme)
        x_q = q.quantize_input(x)
        for n in sorted({workers, 1}, reverse=True):  # --workers 1: the one-process run only
            runs[f"integer {scheme}, {n} process{'es' if n > 1 else ''}"] = lambda q=q, x_q=x_q, n=n: q.predict_int(x_q, n)
    times = {label: [] for label in runs}
    for _ in range(args.rounds):
        for label, fn in runs.items():
            times[label].append(warm_seconds(fn))
    t_ort = np.array(times.pop("onnxruntime float"))
    print(f"batch {args.n} sequences x {args.t} steps, I={args.i}, H={args.h}, {workers} cores, {args.rounds} "
          f"interleaved rounds of {REPEATS} warm runs")
    print(f"  {'onnxruntime float:':29s} {1e3 * np.median(t_ort):8.1f} ms")
    for label, t in times.items():
        ratio = np.array(t) / t_ort
        print(f"  {label + ':':29s} {1e3 * np.median(t):8.1f} ms   ratio to onnxruntime: median "
              f"{np.median(ratio):.2f}x (range {ratio.min():.2f}-{ratio.max():.2f}x, "
              f"{np.sum(ratio > TARGET_RATIO)} of {len(ratio)} rounds above {TARGET_RATIO:g}x)")
    print(f"target: the integer runtime at most {TARGET_RATIO:g}x onnxruntime float (per-round ratios: absolute "
          "times drift with the machine)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
