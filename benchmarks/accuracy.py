"""Accuracy of the integer GRU against float, on real recorded data and on the demo task.

    .venv/bin/python benchmarks/accuracy.py [--quick]

For each task a small PyTorch GRU is trained (seeded, CPU), loaded with grukit, calibrated on the training
split, quantized with int8 and 16x8, and scored on the held-out split by the float reference and the
integer runtime. Targets (issue 3): classification int8 within 0.5 points of float top-1, 16x8 within 0.1;
regression / per-step MSE int8 <= 1.3x float, 16x8 <= 1.05x.

Then a forecaster whose test inputs leave the calibrated range (issue 15): a GRU(50) trained on the first
eight years of the airline-passenger series, tested on the last four (a trending series: the test inputs
reach values the calibration windows never do), deployed with grukit's defaults: the validation-range check
must flag the input and the default budget (MSE +25%) must fail; declared with --input-range as the
count's plausible span (0 to 800 thousand passengers a month), int8 must stay within 1.3x float's MSE.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import make_demo_data  # noqa: E402
import realdata  # noqa: E402

import grukit  # noqa: E402

TARGETS = {("accuracy", "int8"): 0.5, ("accuracy", "16x8"): 0.1, ("mse", "int8"): 1.3, ("mse", "16x8"): 1.05}


class Net(nn.Module):
    def __init__(self, I, H, O, layers=1, per_step=False):
        super().__init__()
        self.per_step = per_step
        self.gru = nn.GRU(I, H, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(H, O)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out if self.per_step else out[:, -1])


DATA = Path(__file__).resolve().parent.parent / "grukit" / "data"


@dataclass
class Task:
    name: str
    kind: str  # "accuracy" or "mse"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    hidden: int
    layers: int = 1
    epochs: int = 200
    per_step: bool = False
    model_file: Path | None = None  # a trained model shipped in the repo instead of training one


def standardize(x_tr, x_te):
    mu = x_tr.mean(axis=(0, 1), keepdims=True)
    sd = x_tr.std(axis=(0, 1), keepdims=True) + 1e-6
    return ((x_tr - mu) / sd).astype(np.float32), ((x_te - mu) / sd).astype(np.float32)


def forecasting(x_tr, x_te):
    """Per-step next-sample prediction: input x[:, :-1], target x[:, 1:]."""
    x_tr, x_te = standardize(x_tr, x_te)
    return x_tr[:, :-1], x_tr[:, 1:], x_te[:, :-1], x_te[:, 1:]


DEMO_TEST_WINDOWS = 4000
DEMO_TEST_SEED = 20261121  # not the seed of the shipped splits: fresh windows the model has never seen


def tasks(quick: bool) -> list[Task]:
    # The demo's 320 shipped validation windows cannot resolve a 0.1-point target (one window is 0.31
    # points): the demo model is scored on 4000 fresh windows from the same generator (one = 0.025 points).
    calib = np.load(DATA / "demo_calib.npz")["x"]
    x_demo, y_demo = make_demo_data.make_split(DEMO_TEST_WINDOWS, np.random.default_rng(DEMO_TEST_SEED))
    out = [Task("demo: accelerometer gestures (5 classes, T=50; fresh windows)", "accuracy", calib, None,
                x_demo, y_demo, hidden=32, model_file=DATA / "demo_model.onnx")]
    xa, ya, xb, yb, _ = realdata.japanese_vowels()
    xa, xb = standardize(xa, xb)
    out.append(Task("JapaneseVowels (9 speakers, 12 LPC, T=25)", "accuracy", xa, ya, xb, yb, hidden=32))
    xa, ya, xb, yb, _ = realdata.basic_motions()
    xa, xb = standardize(xa, xb)
    out.append(Task("BasicMotions (watch accel+gyro, 4 activities, T=100)", "accuracy", xa, ya, xb, yb, hidden=32))
    xa, _, xb, _, _ = realdata.basic_motions()
    out.append(Task("BasicMotions next-step forecast (6 ch, per step)", "mse", *forecasting(xa, xb), hidden=32,
                    per_step=True))
    xa, _, xb, _, _ = realdata.gun_point()
    out.append(Task("GunPoint next-step forecast (per step, T=149)", "mse", *forecasting(xa, xb), hidden=16,
                    per_step=True, layers=2))
    if quick:
        for t in out:
            t.epochs = 40  # (the demo model is shipped trained)
    return out


def train(task: Task, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    O = int(task.y_train.max()) + 1 if task.kind == "accuracy" else task.y_train.shape[-1]
    net = Net(task.x_train.shape[-1], task.hidden, O, task.layers, task.per_step)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.from_numpy(task.x_train)
    y = torch.from_numpy(task.y_train)
    loss_fn = nn.CrossEntropyLoss() if task.kind == "accuracy" else nn.MSELoss()
    for _ in range(task.epochs):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    return net.eval()


def score(kind: str, pred: np.ndarray, y: np.ndarray) -> float:
    if kind == "accuracy":
        return float(100.0 * np.mean(pred.argmax(-1) == y))
    return float(np.mean((pred - y) ** 2))


def compare_observers(quick: bool) -> int:
    """Per classification task, int8 test decisions that differ from float's under each observer and under
    auto (issue 15: auto changes no more than the best single observer)."""
    kinds = ("minmax", "percentile", "mse", "auto")
    print("| task | test sequences | " + " | ".join(f"{k} changed" for k in kinds) + " | auto chose |")
    print("|---|---|" + "---|" * (len(kinds) + 1))
    ok = True
    for task in tasks(quick):
        if task.kind != "accuracy":
            continue
        model = grukit.load(task.model_file if task.model_file else train(task))
        reference = model.predict(task.x_test).argmax(-1)
        changed, chose = {}, ""
        for kind in kinds:
            q = grukit.quantize(model, task.x_train, scheme="int8", observer=kind)
            changed[kind] = int(np.sum(q.predict(task.x_test).argmax(-1) != reference))
            if kind == "auto":
                chose = ", ".join(f"layer{l}/{n}: {k}" for (l, n), k in q.report.observer_kinds.items()) or "min/max"
        ok &= changed["auto"] <= min(changed[k] for k in kinds[:3])
        print(f"| {task.name} | {len(task.x_test)} | " + " | ".join(str(changed[k]) for k in kinds) + f" | {chose} |")
    print("target: auto changes no more decisions than the best single observer:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


PASSENGER_SPAN = (0.0, 800.0)  # thousands a month: the declared input range of the trending forecaster


def trending_forecaster(quick: bool) -> tuple[list[str], bool]:
    """Deploy the airline forecaster with default settings and with a declared input range (module
    docstring); (lines to print, targets met)."""
    from tempfile import TemporaryDirectory

    from grukit.pipeline import deploy

    xa, ya, xb, yb = realdata.trending_forecast()
    series = realdata.airline()
    mean, std = series[:96].mean(), series[:96].std()
    declared = tuple((v - mean) / std for v in PASSENGER_SPAN)  # the span in the standardized units
    task = Task("airline", "mse", xa, ya, xb, yb, hidden=50, epochs=80 if quick else 400)
    model = grukit.load(train(task))
    lines, ok = [], True
    with TemporaryDirectory() as tmp:
        for scheme in ("int8", "16x8"):
            for input_range in (None, declared):
                r = deploy(model, xa, (xb, yb), "stm32l476", scheme=scheme, out_dir=f"{tmp}/{scheme}{input_range}",
                           progress=False, input_range=input_range)
                ratio = r.scores[f"numpy-{scheme}"] / r.scores["numpy-float"]
                flagged = any(w.startswith("layer0/x:") for w in r.warnings)
                how = ("defaults" if input_range is None else
                       f"--input-range={declared[0]:.3g}:{declared[1]:.3g} (0 to 800 thousand passengers)")
                lines.append(f"| {scheme} | {how} | {r.scores['numpy-float']:.4f} | {r.scores[f'numpy-{scheme}']:.4f} | "
                             f"{ratio:.3f}x | {'yes' if flagged else 'no'} | {'PASS' if r.passed else 'FAIL'} |")
                if input_range is None:
                    ok &= flagged and not r.passed
                elif scheme == "int8":
                    ok &= ratio <= 1.3
    return lines, ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer training epochs (smoke run)")
    ap.add_argument("--observer", default="minmax")
    ap.add_argument("--compare-observers", action="store_true",
                    help="only the classification tasks: decisions int8 changes under each observer and auto")
    args = ap.parse_args(argv)
    if args.compare_observers:
        return compare_observers(args.quick)
    rows, ok = [], True
    for task in tasks(args.quick):
        t0 = time.perf_counter()
        model = grukit.load(task.model_file if task.model_file else train(task))
        y_float = model.predict(task.x_test)
        f = score(task.kind, y_float, task.y_test)
        row = [task.name, len(task.x_test), task.kind, f]
        for scheme in ("int8", "16x8"):
            q = grukit.quantize(model, task.x_train, scheme=scheme, observer=args.observer)
            y_int = q.predict(task.x_test)
            s = score(task.kind, y_int, task.y_test)
            if task.kind == "accuracy":
                drop = f - s
                changed = int(np.sum(y_int.argmax(-1) != y_float.argmax(-1)))
                passed = drop <= TARGETS[("accuracy", scheme)]
                row += [s, f"{s - f:+.3f} pt ({changed} changed)", passed]
            else:
                ratio = s / f
                passed = ratio <= TARGETS[("mse", scheme)]
                row += [s, f"{ratio:.3f}x", passed]
            ok &= passed
        rows.append(row)
        print(f"  {task.name}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print("| task | test sequences | metric | float | int8 | int8 vs float | 16x8 | 16x8 vs float |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, kind, f, s8, d8, p8, s16, d16, p16 in rows:
        fmt = (lambda v: f"{v:.2f}%") if kind == "accuracy" else (lambda v: f"{v:.5f}")
        mark = lambda p: "" if p else " FAIL"
        size = f"{n} (one = {100 / n:.3g} pt)" if kind == "accuracy" else str(n)
        print(f"| {name} | {size} | {'top-1' if kind == 'accuracy' else 'MSE'} | {fmt(f)} | {fmt(s8)} | "
              f"{d8}{mark(p8)} | {fmt(s16)} | {d16}{mark(p16)} |")
    print("targets: int8 <= 0.5 pt drop / <= 1.3x MSE; 16x8 <= 0.1 pt / <= 1.05x:", "PASS" if ok else "FAIL")
    print("(changed: test sequences whose integer top-1 class differs from float's, either way)")
    lines, met = trending_forecaster(args.quick)
    print("\nAirline passengers, GRU(50) forecaster: test inputs beyond the calibrated range (grukit deploy, "
          "stm32l476)")
    print("| scheme | settings | float MSE | integer MSE | ratio | input flagged | deploy |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print("targets: flagged and failing with defaults; int8 <= 1.3x with the declared range:", "PASS" if met else "FAIL")
    return 0 if ok and met else 1


if __name__ == "__main__":
    sys.exit(main())
