"""Time one recurrent step of the integer runtime's compiled plan, op by op.

    .venv/bin/python benchmarks/step_profile.py [--scheme 16x8 --rows 128 --i 16 --h 64]

The model and data are speed.py's; the step runs on `rows` sequences (128: one process's share of speed.py's
batch on 2 cores) with BLAS on one thread. Prints each plan step's time (best of 7 repeats of 200 warm calls,
in isolation) and the whole step as `LayerPlan.run` executes it. The first line is how long the first
`predict` took in this process (plan build, and for 16x8 numba's compile or its cache load).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import grukit
from grukit.runtime.int_gru import _plans
from speed import random_model

REPEATS, CALLS = 7, 200


def best_us(fn) -> float:
    fn()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        times.append((time.perf_counter() - t0) / CALLS * 1e6)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scheme", default="16x8", choices=["int8", "16x8"])
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--i", type=int, default=16)
    ap.add_argument("--h", type=int, default=64)
    args = ap.parse_args(argv)
    model = random_model(args.i, args.h, 4)
    x = np.random.default_rng(1).standard_normal((args.rows, 20, args.i)).astype(np.float32)
    q = grukit.quantize(model, x[:64], scheme=args.scheme)
    t0 = time.perf_counter()
    q.predict(x[:1, :1], workers=1)
    print(f"first predict in this process: {time.perf_counter() - t0:.2f} s")
    layer = q.layers[0]
    input_plan, plan = _plans(layer)
    threadpool_limits(1)
    xs = np.ascontiguousarray(q.quantize_input(x).transpose(1, 0, 2))
    ahead = plan.hold({k: v for k, v in input_plan.run({"x": xs}).items() if k != "x"})
    env = {k: v[5] for k, v in ahead.items()}
    h = np.random.default_rng(2).integers(-100, 100, (args.rows, args.h)) * (1 if args.scheme == "int8" else 300)
    env["h"] = plan.encode("h", h.astype(layer.qparams["h"].np_dtype))
    every = plan.run(dict(env))  # every tensor of the step, as the plan holds it
    print(f"{args.scheme}, one step on {args.rows} sequences, I={args.i}, H={args.h} (us):")
    for fn, inputs, outputs in plan.steps:
        values = [every[name] for name in inputs]
        print(f"  {type(fn).__name__:9s} {', '.join(outputs):24s} {best_us(lambda: fn(*values)):7.1f}")
    print(f"  whole step (LayerPlan.run)         {best_us(lambda: plan.run(dict(env))):7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
