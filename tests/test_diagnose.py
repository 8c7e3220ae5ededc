"""Why the integer model loses (issue 15): per-tensor error against float, what each tensor group costs, and
the auto observer's choices."""

from __future__ import annotations

import json

import numpy as np
import pytest

import grukit
from gru_factory import random_inputs, random_model
from grukit import diagnose as D
from grukit.pipeline import deploy
from grukit.quantize.quantize import AUTO_HELD_OUT, OBSERVERS, choose_observers, quantize_model


def test_tensor_error_of_the_input_is_its_rounding_error():
    model = random_model(seed=80, I=3, H=8, O=2, layers=2, hidden=[(5, "relu")])
    x = random_inputs(80, N=12, T=9, I=3)
    q = grukit.quantize(model, x)
    errors = D.tensor_errors(q, x)
    qx = q.layers[0].qparams["x"]
    diff = qx.dequantize(qx.quantize(x)).astype(np.float64) - x
    assert errors["layer0/x"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(diff ** 2))), rel=1e-9)
    assert errors["layer0/x"]["rmse_lsb"] == pytest.approx(errors["layer0/x"]["rmse"] / qx.scale)
    assert errors["layer0/x"]["rmse_lsb"] <= 0.5  # rounding: at most half a step
    names = {f"layer{l}/{n}" for l in range(2) for n in ("gx_z", "gh_n", "z_pre", "n", "h")} | {"head0_out", "head1_out"}
    assert names <= errors.keys()
    assert all(len(e["per_step_lsb"]) == 9 for k, e in errors.items() if k.startswith("layer"))


def test_the_simulation_with_everything_in_float_is_the_float_model():
    model = random_model(seed=81, I=3, H=8, O=3)
    x = random_inputs(81, N=8, T=6, I=3)
    q = grukit.quantize(model, x)
    everything = tuple((0, g) for g in D.GROUPS) + ((1, "head"),)
    np.testing.assert_allclose(D.simulate(q, x, everything, (0, 1)), model.predict(x), rtol=0, atol=1e-5)
    # All quantized, the stand-in is close to the integer runtime (not equal: exact sigmoid and tanh).
    spread = float(np.ptp(model.predict(x)))
    assert np.abs(D.simulate(q, x) - q.predict(x)).max() < 0.1 * spread


def test_a_clipping_input_is_named_as_what_costs_the_metric(tmp_path):
    model = random_model(seed=82, I=2, H=10, O=1)
    calib = random_inputs(82, N=32, T=10, I=2, scale=0.3)
    val_x = random_inputs(83, N=32, T=10, I=2, scale=3.0)
    report = deploy(model, calib, (val_x, model.predict(val_x)), "stm32l476", out_dir=tmp_path, progress=False,
                    max_drop="1000%", observer="minmax")
    s = report.sensitivity
    assert s["groups"] and s["groups"][0]["group"] == "layer0 input"
    assert "--input-range" in s["groups"][0]["advice"] and s["groups"][0]["recovered"] > 0.2
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["sensitivity"]["groups"][0]["group"] == "layer0 input"
    assert "layer0/x" in saved["tensor_error"]["tensors"]
    assert "What costs the metric" in (tmp_path / "report.md").read_text()
    assert "Per-tensor quantization error" in (tmp_path / "report.html").read_text()


def test_no_loss_means_nothing_to_attribute(tmp_path):
    model = random_model(seed=84, I=2, H=6, O=3)
    x = random_inputs(84, N=16, T=8, I=2)
    labels = model.predict(x).argmax(-1)
    report = deploy(model, x, (x, labels), "stm32l476", out_dir=tmp_path, progress=False, scheme="16x8",
                    observer="minmax")
    if report.scores["numpy-16x8"] >= report.scores["numpy-float"]:
        assert report.sensitivity["groups"] == [] and "nothing to attribute" in report.sensitivity["note"]


def test_auto_takes_the_best_observer_for_an_input_with_an_outlier():
    """One calibration sequence holds a spike 40x the rest: min/max spends the input's grid on it. Auto's pick
    for the input equals the best of the three observers by brute force on the held-out sequences."""
    model = random_model(seed=85, I=2, H=8, O=2)
    x = random_inputs(85, N=40, T=10, I=2, scale=0.5)
    x[0, 3, 0] = 20.0
    kinds = choose_observers(model, x, grukit.INT8)
    held = np.arange(len(x)) % AUTO_HELD_OUT == AUTO_HELD_OUT - 1
    reference = model.predict(x[held])
    error = {kind: float(np.mean((quantize_model(model, x[~held], observer_kinds={(0, "x"): kind}).predict(x[held])
                                  - reference) ** 2)) for kind in OBSERVERS}
    best = min(error, key=error.get)
    assert best != "minmax" and kinds.get((0, "x"), "minmax") == best, (kinds, error)
    q = quantize_model(model, x, observer="auto")
    assert q.report.observer == "auto" and q.report.observer_kinds == kinds


def test_auto_leaves_small_calibration_sets_at_min_max():
    model = random_model(seed=86, I=2, H=4, O=2)
    assert choose_observers(model, random_inputs(86, N=5, T=4, I=2), grukit.INT8) == {}
