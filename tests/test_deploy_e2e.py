"""`grukit deploy` end to end through the command line, on a PyTorch-exported .onnx and on a Keras .keras file.

The report's numbers are checked against what the Python API gives for the same data (grukit.load +
predict, grukit.quantize(...).predict) and against each source framework run here by the test itself;
the integer runtimes must agree bit for bit; exit codes 0 / 1 / 2.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import keras
import onnxruntime as ort
import torch


import grukit  # noqa: E402
from grukit.cli import main  # noqa: E402


# onnxruntime's GRU vs grukit's float NumPy reference on the same file: summation order only. Accuracy is a
# count, so a flip needs a logit tie within this; the test asserts none is that close.
LOGIT_TIE_MARGIN = 1e-4
# Keras (torch backend, float32) vs the same Keras model run by the pipeline: the same program on the same
# inputs, batched differently.
KERAS_MSE_RTOL = 1e-5


def _one_line_error(err: str) -> None:
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "error:" in err, err


def _self_contained(page: str) -> None:
    """No reference that would make the browser fetch anything: every src/href is a data: URI."""
    assert re.search(r"""(src|href)\s*=\s*['"](?!data:)""", page) is None
    for token in ("<script", "<link", "url(", "@import"):
        assert token not in page, f"report.html holds {token!r}"
    assert page.count("data:image/png;base64,") >= 2  # budget and drift plots at least


def _deploy(capsys, *argv):
    code = main(["deploy", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# --- (a) a PyTorch model exported to ONNX ----------------------------------------------------------------
class Classifier(torch.nn.Module):
    def __init__(self, I=4, H=12, O=3):
        super().__init__()
        self.gru = torch.nn.GRU(I, H, batch_first=True)
        self.fc = torch.nn.Linear(H, O)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


@pytest.fixture(scope="module")
def onnx_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx_case")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    module = Classifier().eval()
    x = rng.standard_normal((96, 12, 4)).astype(np.float32)
    with torch.no_grad():
        logits = module(torch.from_numpy(x)).numpy()
    y = logits.argmax(1).astype(np.int64)
    y[::4] = (y[::4] + 1) % 3  # a quarter wrong, so accuracy is not trivially 1
    path = tmp / "classifier.onnx"
    torch.onnx.export(module, (torch.from_numpy(x[:1]),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
    np.savez(tmp / "calib.npz", x=x[:32])
    np.savez(tmp / "val.npz", x=x, y=y)
    return tmp, path, x, y


def test_onnx_deploy_report_matches_the_python_api(onnx_case, capsys, tmp_path):
    tmp, path, x, y = onnx_case
    code, out, err = _deploy(capsys, path, "--calib", tmp / "calib.npz", "--val", tmp / "val.npz",
                             "--target", "stm32l476", "--max-drop", "1.0", "--out", tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert code == 0 and doc["pass"] and "PASS" in out, doc

    model = grukit.load(path)
    float_out = model.predict(x)
    int_out = grukit.quantize(model, x[:32], scheme="int8").predict(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    source_out = session.run(None, {"x": x})[0]
    assert np.ptp(np.sort(source_out, axis=1)[:, -2:], axis=1).min() > LOGIT_TIE_MARGIN
    scores = doc["scores"]
    assert scores["numpy-float"] == float(np.mean(float_out.argmax(1) == y))
    assert scores["numpy-int8"] == float(np.mean(int_out.argmax(1) == y))
    assert scores["framework"] == float(np.mean(source_out.argmax(1) == y))
    assert doc["drop"]["numpy-int8"] == scores["numpy-float"] - scores["numpy-int8"]
    # The integer runtimes give the NumPy runtime's integers, so the same accuracy.
    assert scores["tflite-micro"] == scores["c-kernel"] == scores["numpy-int8"]
    assert doc["bit_exact"] == {"tflite-micro": True, "c-kernel": True}, doc["bit_exact_detail"]
    # ... and each comparison is one of the checks the exit code depends on.
    checks = {t["name"]: t for t in doc["targets"]}
    for runtime in ("tflite-micro", "c-kernel"):
        assert (checks[f"{runtime} bit-exact"]["value"], checks[f"{runtime} bit-exact"]["pass"]) == (0, True)
    assert doc["model"]["params"] == model.param_count() and doc["model"]["macs_per_step"] == model.macs_per_step()
    assert np.array(doc["confusion"]["numpy-int8"]).sum() == len(y)
    assert len(doc["drift"]) == 1 and len(doc["drift"][0]["mean"]) == x.shape[1]
    _self_contained((tmp_path / "report.html").read_text())


def test_missing_file_is_exit_2_without_traceback(onnx_case, tmp_path):
    tmp, path, _, _ = onnx_case
    proc = subprocess.run([sys.executable, "-m", "grukit.cli", "deploy", str(path), "--calib",
                           str(tmp / "no-such-calib.npz"), "--val", str(tmp / "val.npz"), "--target", "stm32l476",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no-such-calib.npz: no such file" in proc.stderr
    _one_line_error(proc.stderr)
    assert not (tmp_path / "out" / "report.json").exists()


# --- (b) the seed Keras model, regression -----------------------------------------------------------------
@pytest.fixture(scope="module")
def keras_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keras_case")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # Next value of a noisy sine from the previous 10 samples.
    phase = rng.uniform(0, 2 * np.pi, size=(320, 1))
    freq = rng.uniform(0.2, 0.6, size=(320, 1))
    t = np.arange(11)[None, :]
    series = (np.sin(phase + freq * t) + 0.05 * rng.standard_normal((320, 11))).astype(np.float32)
    x, y = series[:, :10, None], series[:, 10:]
    net = keras.Sequential([keras.layers.GRU(50, activation="tanh", input_shape=(10, 1)), keras.layers.Dense(1)])
    net.compile(optimizer="adam", loss="mse")
    net.fit(x[:192], y[:192], epochs=3, batch_size=32, verbose=0)
    path = tmp / "seed.keras"
    net.save(str(path))
    np.savez(tmp / "calib.npz", x=x[:64])
    np.savez(tmp / "val.npz", x=x[192:], y=y[192:])
    return tmp, path, x[192:], y[192:], np.asarray(net.predict(x[192:], verbose=0))


def _mse(out, y) -> float:
    return float(np.mean((np.asarray(out).astype(np.float64) - y) ** 2))


def test_keras_deploy_report_matches_the_python_api(keras_case, capsys, tmp_path):
    tmp, path, x, y, keras_out = keras_case
    code, out, _ = _deploy(capsys, path, "--calib", tmp / "calib.npz", "--val", tmp / "val.npz",
                           "--target", "nrf52840", "--max-drop", "1.0", "--out", tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert code == 0 and doc["pass"], doc["targets"]
    assert doc["task"] == "regression" and doc["metric"] == "mse"
    model = grukit.load(path)
    assert doc["scores"]["numpy-float"] == _mse(model.predict(x), y)
    calib_x = np.load(tmp / "calib.npz")["x"]
    # deploy's default observer is auto; so is this call's
    assert doc["observer"]["name"] == "auto"
    assert doc["scores"]["numpy-int8"] == _mse(grukit.quantize(model, calib_x, scheme="int8", observer="auto").predict(x), y)
    assert doc["scores"]["framework"] == pytest.approx(_mse(keras_out, y), rel=KERAS_MSE_RTOL)
    assert "Keras" in doc["runtimes"]["framework"]["what"]
    assert doc["bit_exact"] == {"tflite-micro": True, "c-kernel": True}, doc["bit_exact_detail"]
    assert doc["model"]["hidden_size"] == [50] and doc["model"]["params"] == 3 * 50 * (1 + 50) + 6 * 50 + 50 + 1
    _self_contained((tmp_path / "report.html").read_text())


def test_keras_impossible_drop_is_exit_1_saying_by_how_much(keras_case, capsys, tmp_path):
    tmp, path, x, y, _ = keras_case
    model = grukit.load(path)
    calib_x = np.load(tmp / "calib.npz")["x"]
    drop = _mse(grukit.quantize(model, calib_x, observer="minmax").predict(x), y) - _mse(model.predict(x), y)
    # Precondition on this seeded data: int8 makes the MSE worse, so no limit >= 0 below the drop can hold.
    assert drop > 0
    code, out, _ = _deploy(capsys, path, "--calib", tmp / "calib.npz", "--val", tmp / "val.npz",
                           "--target", "nrf52840", "--max-drop", f"{drop / 2!r}", "--observer", "minmax",
                           "--out", tmp_path)
    assert code == 1
    assert "FAIL" in out and "mse drop (numpy-int8 vs numpy-float)" in out and "exceeds the limit" in out
    doc = json.loads((tmp_path / "report.json").read_text())
    assert not doc["pass"] and doc["targets"][-1]["value"] == pytest.approx(drop, rel=1e-9)
