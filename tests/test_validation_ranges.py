"""The deploy report says why accuracy is lost (issue 15): validation data outside the quantized ranges is
counted and warned about, the input's range can be declared, and a regression run has a default budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

import grukit
from gru_factory import random_inputs, random_model
from grukit.cli import main as cli
from grukit.export.onnx_export import export_onnx_sequence
from grukit.inputs import load_input_range
from grukit.pipeline import DEFAULT_MAX_MSE_RISE, deploy, drop_limit
from grukit.quantize.quantize import quantize_model, span_inputs

BOARD = "stm32l476"


@pytest.fixture(scope="module")
def forecaster():
    """A per-sequence regression model, calibration inputs in [-1, 1] and validation inputs up to 3x larger:
    the input (and what follows it) leave their calibrated ranges on validation data only."""
    model = random_model(seed=70, I=2, H=12, O=1)
    calib = random_inputs(70, N=32, T=12, I=2, scale=1.0)
    val_x = random_inputs(71, N=24, T=12, I=2, scale=3.0)
    return model, calib, val_x, model.predict(val_x)


def test_validation_saturation_and_warnings_reach_every_report(forecaster, tmp_path, capsys):
    model, calib, val_x, val_y = forecaster
    path = export_onnx_sequence(model, tmp_path / "f.onnx")
    np.savez(tmp_path / "calib.npz", x=calib)
    np.savez(tmp_path / "val.npz", x=val_x, y=val_y)
    out = tmp_path / "out"
    cli(["deploy", str(path), "--calib", str(tmp_path / "calib.npz"), "--val", str(tmp_path / "val.npz"),
         "--target", BOARD, "--out", str(out), "--max-drop", "1000%"])
    report = json.loads((out / "report.json").read_text())
    first = next(iter(report["val_saturation"]))
    assert first == "layer0/x"  # the input first
    x_entry = report["val_saturation"]["layer0/x"]
    outside = int(np.sum((val_x < x_entry["range"][0]) | (val_x > x_entry["range"][1])))
    assert x_entry["saturated"] == x_entry["harmful"] == outside > 0 and x_entry["of"] == val_x.size
    assert x_entry["observed"] == pytest.approx([float(val_x.min()), float(val_x.max())])
    warnings = report["warnings"]
    assert warnings and any(w.startswith("layer0/x:") and "--input-range" in w for w in warnings)
    cli_out = capsys.readouterr().out
    assert f"WARNING {warnings[0]}" in cli_out
    assert warnings[0] in (out / "report.md").read_text()
    assert json.dumps(warnings[0])[1:40] in json.dumps((out / "report.html").read_text())


def test_no_warning_when_validation_stays_inside(forecaster, tmp_path):
    model, calib, _, _ = forecaster
    inside = calib[:8] * 0.5
    report = deploy(model, calib, (inside, model.predict(inside)), BOARD, out_dir=tmp_path, progress=False)
    assert report.warnings == []
    assert all(v["harmful"] == 0 for v in report.val_saturation.values())


def test_a_declared_input_range_covers_the_validation_inputs(forecaster, tmp_path):
    model, calib, val_x, val_y = forecaster
    span = float(np.ceil(np.abs(val_x).max()))
    report = deploy(model, calib, (val_x, val_y), BOARD, out_dir=tmp_path, progress=False,
                    input_range=f"{-span}:{span}", max_drop="1000%")
    assert report.input_range == {"lo": [-span, -span], "hi": [span, span]}
    assert report.val_saturation["layer0/x"]["harmful"] == 0
    assert not any(w.startswith("layer0/x:") for w in report.warnings)


def test_input_range_quantizes_the_input_over_it_and_spans_the_calibration():
    model = random_model(seed=72, I=3, H=8)
    calib = random_inputs(72, N=10, T=6, I=3)
    lo, hi = [-2.0, -1.0, 0.0], [2.0, 5.0, 1.0]
    q = quantize_model(model, calib, input_range=(lo, hi))
    q_lo, q_hi = q.layers[0].qparams["x"].range
    assert q_lo <= -2.0 and q_hi >= 5.0 and q_hi - q_lo < 7.0 * 1.02  # [min lo, max hi], to a grid step
    spanned = span_inputs(calib, np.array(lo), np.array(hi))
    np.testing.assert_allclose(spanned.min(axis=(0, 1)), lo, atol=1e-6)
    np.testing.assert_allclose(spanned.max(axis=(0, 1)), hi, atol=1e-6)
    # Spanned copies reach the internal tensors: their ranges grow beside calibration alone.
    plain = quantize_model(model, calib)
    assert q.report.observed[(0, "gx_z")][1] >= plain.report.observed[(0, "gx_z")][1]


@pytest.mark.parametrize("text, expected", [
    ("-4:4", ([-4.0] * 2, [4.0] * 2)),
    ("0:1.5", ([0.0] * 2, [1.5] * 2)),
])
def test_input_range_forms(text, expected, tmp_path):
    assert load_input_range(text, 2) == expected
    (tmp_path / "r.json").write_text(json.dumps({"lo": [-1, -2], "hi": 3}))
    assert load_input_range(tmp_path / "r.json", 2) == ([-1.0, -2.0], [3.0, 3.0])
    (tmp_path / "r.toml").write_text("lo = 0\nhi = [1, 2]\n")
    assert load_input_range(str(tmp_path / "r.toml"), 2) == ([0.0, 0.0], [1.0, 2.0])


@pytest.mark.parametrize("text, message", [
    ("4:-4", "lo < hi"), ("a:b", "LO:HI"), ("1:2:3", "LO:HI"), ("nope.json", "no such file"),
])
def test_bad_input_ranges(text, message):
    with pytest.raises(grukit.BadInputError, match=message):
        load_input_range(text, 2)


def test_drop_limits():
    assert drop_limit(None, "classification", 0.9) == (0.02, None)
    assert drop_limit("1%", "classification", 0.9) == (0.01, None)  # points of accuracy
    assert drop_limit(None, "regression", 0.4) == (pytest.approx(0.1), 0.25)  # 25% of float's MSE
    assert DEFAULT_MAX_MSE_RISE == "25%"
    assert drop_limit(0.05, "regression", 0.4) == (0.05, None)
    with pytest.raises(grukit.BadInputError, match="percentage"):
        drop_limit("lots", "regression", 0.4)


def test_a_forecaster_losing_more_than_a_quarter_fails_by_default(forecaster, tmp_path):
    model, calib, val_x, val_y = forecaster
    report = deploy(model, calib, (val_x, val_y + 0.05), BOARD, out_dir=tmp_path, progress=False)
    line = next(t for t in report.targets if t["name"].startswith("mse drop"))
    assert report.max_drop_relative == 0.25
    assert line["limit"] == pytest.approx(0.25 * report.scores["numpy-float"])
    assert line["pass"] == (report.drop()["numpy-int8"] <= line["limit"])
    assert "25% of numpy-float's mse" in line["note"]
