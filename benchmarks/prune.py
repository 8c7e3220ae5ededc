"""Structured pruning on real data: accuracy after int8 quantization, flash and instructions per step.

    .venv/bin/python benchmarks/prune.py [--seeds N] [--quick]

Two tasks (issue 14):
- JapaneseVowels (9 speakers, 12 LPC coefficients, T=25), a deliberately wide GRU (H=128) trained here
  (seeded, CPU, 200 full-batch epochs). One-shot pruning from calibration data alone (the training split's
  inputs, no labels): grukit.prune with its least-squares refit. Targets: 50% of the units removed for at
  most 1 point, 75% for at most 2, after int8 quantization; with fine-tuning on the training split
  (grukit.prune_and_fine_tune), 75% for at most 1 point.
- The demo task (accelerometer gestures, the shipped H=32 model): 25% removed with fine-tuning on the
  shipped training split for at most 1 point, scored on 4000 fresh windows (one window = 0.025 points).
Every drop is the int8 pruned model's against the ORIGINAL float model. Flash (arm-none-eabi-size of the
-O2 Cortex-M4 build: model constants + kernel code) and instructions per step (QEMU mps2-an386) of the
int8 models come from the emulated Cortex-M4 when the ARM toolchain and QEMU are installed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import make_demo_data  # noqa: E402
import realdata  # noqa: E402
from accuracy import DATA, DEMO_TEST_SEED, DEMO_TEST_WINDOWS, Net, standardize  # noqa: E402

import grukit  # noqa: E402
from grukit.firmware_ref.c_export import export_c  # noqa: E402
from grukit.firmware_ref.measure import built_flash_bytes, measure_step_instructions  # noqa: E402

MACHINE = "mps2-an386"  # Cortex-M4
TARGETS = {"one-shot 50%": 1.0, "one-shot 75%": 2.0, "fine-tuned 75%": 1.0, "demo fine-tuned 25%": 1.0}


def train_wide(x, y, seed: int, epochs: int) -> Net:
    torch.manual_seed(seed)
    net = Net(x.shape[-1], 128, int(y.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


def device(qmodel) -> tuple[str, str]:
    """(flash bytes, instructions per step) on the emulated Cortex-M4, or 'n/a' with why."""
    with tempfile.TemporaryDirectory() as tmp:
        c_file = next(p for p in export_c(qmodel, tmp) if p.name.endswith(".c") and p.name != "main.c")
        built = built_flash_bytes(c_file, qmodel.scheme)
    count = measure_step_instructions(qmodel, MACHINE)
    flash = "n/a (no ARM toolchain)" if built is None else f"{built.model_bytes + built.kernel_bytes:,}"
    return flash, "n/a (no QEMU)" if count is None else f"{count:,.0f}"


def accuracy(model, x, y) -> float:
    return float(100.0 * np.mean(model.predict(x).argmax(-1) == y))


def row(name: str, model, calib, x, y, reference: float, rows: list, seconds: float) -> float:
    q = grukit.quantize(model, calib)
    f, s = accuracy(model, x, y), accuracy(q, x, y)
    flash, instructions = device(q)
    hidden = "+".join(str(layer.hidden_size) for layer in model.layers)
    drop = reference - s
    limit = TARGETS.get(name)
    verdict = "" if limit is None else (" pass" if drop <= limit else " FAIL")
    rows.append([name, hidden, f"{model.param_count():,}", f"{f:.2f}", f"{s:.2f}",
                 f"{drop:+.2f}" + (f" (<= {limit:g}){verdict}" if limit is not None else ""),
                 flash, instructions, f"{seconds:.0f}"])
    return drop


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1, help="JapaneseVowels models trained with seeds 0..N-1")
    ap.add_argument("--quick", action="store_true", help="fewer epochs everywhere (a smoke run; targets not meant)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    epochs = 40 if args.quick else 200
    tune = dict(stages=2, epochs=3, final_epochs=5) if args.quick else {}
    ok = True
    header = ["model", "hidden", "parameters", "float %", "int8 %", "int8 drop from the original float (pt)",
              "flash B (M4)", "instructions / step (M4)", "seconds"]
    xa, ya, xb, yb, _ = realdata.japanese_vowels()
    xa, xb = standardize(xa, xb)
    for seed in range(args.seeds):
        rows: list = []
        net = train_wide(xa, ya, seed, epochs)
        model = grukit.load(net)
        reference = accuracy(model, xb, yb)
        row("original", model, xa, xb, yb, reference, rows, 0)
        for ratio in (0.5, 0.75):
            t = time.perf_counter()
            pruned = grukit.prune(model, xa, ratio=ratio).model  # calibration inputs only: no labels
            drop = row(f"one-shot {ratio:.0%}", pruned, xa, xb, yb, reference, rows, time.perf_counter() - t)
            ok &= drop <= TARGETS[f"one-shot {ratio:.0%}"] or args.quick
        t = time.perf_counter()
        tuned = grukit.prune_and_fine_tune(net, xa, ya, 0.75, seed=seed, **tune).model
        ok &= row("fine-tuned 75%", tuned, xa, xb, yb, reference, rows, time.perf_counter() - t) <= 1.0 or args.quick
        print(f"\nJapaneseVowels, H=128 trained with seed {seed}; {len(xb)} test sequences (one = {100 / len(xb):.2f} "
              "pt); calibration = the 270 training inputs")
        _print(header, rows)

    rows = []
    demo = grukit.load(DATA / "demo_model.onnx")
    calib = np.load(DATA / "demo_calib.npz")["x"]
    train = np.load(DATA / "demo_train.npz")
    x_test, y_test = make_demo_data.make_split(DEMO_TEST_WINDOWS, np.random.default_rng(DEMO_TEST_SEED))
    reference = accuracy(demo, x_test, y_test)
    row("original", demo, calib, x_test, y_test, reference, rows, 0)
    t = time.perf_counter()
    pruned = grukit.prune(demo, calib, ratio=0.25).model
    row("demo one-shot 25%", pruned, calib, x_test, y_test, reference, rows, time.perf_counter() - t)
    t = time.perf_counter()
    tuned = grukit.prune_and_fine_tune(demo, train["x"], train["y"], 0.25, **tune).model
    drop = row("demo fine-tuned 25%", tuned, calib, x_test, y_test, reference, rows, time.perf_counter() - t)
    ok &= drop <= 1.0 or args.quick
    print(f"\nDemo gestures, the shipped H=32 model; {DEMO_TEST_WINDOWS} fresh test windows; calibration = "
          "demo_calib.npz; fine-tuning on demo_train.npz")
    _print(header, rows)
    print("\ntargets:", "PASS" if ok else "FAIL", "" if not args.quick else "(--quick: not checked)")
    return 0 if ok else 1


def _print(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    sys.exit(main())
