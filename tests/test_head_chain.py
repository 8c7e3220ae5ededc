"""Heads of several dense layers through every stage: quantized (ReLU / ReLU6 fused as the output clamp, tanh /
sigmoid as their own ops, the output activation in float), run by the NumPy runtime, TFLite-Micro (bit-exact),
the C kernel (host and its Python twin, bit-exact; a Cortex-M4 in QEMU), ONNX (float and QDQ)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import firmware_build as fb
import grukit
from gru_factory import random_inputs, random_model
from grukit.export.onnx_export import export_onnx_sequence, export_onnx_step
from grukit.export.onnx_qdq_export import export_onnx_qdq
from grukit.export.tflite_export import export_tflite_sequence, export_tflite_step
from grukit.firmware_ref import host, kernel
from grukit.runtime.int_gru_reference import run_int_reference
from grukit.verify import assert_identical, compare_tflite_micro, run_onnx_qdq_steps
from test_firmware_gru import Case, check_on_machine

# (keyword arguments of random_model): one line per purpose.
HEAD_CASES = {
    "relu_softmax": dict(seed=20, I=4, H=12, O=3, hidden=[(8, "relu")], activation="softmax"),  # the common MLP
    "relu6_tanh": dict(seed=21, I=3, H=10, O=2, layers=2, hidden=[(10, "relu6"), (6, "tanh")]),  # 3 dense layers
    "sigmoid_every_step": dict(seed=22, I=5, H=9, O=4, lbr=0, hidden=[(7, "sigmoid")], activation="sigmoid",
                               per_step=True),  # per-step chain, lbr 0
}
SCHEMES = ("int8", "16x8")
# float32 ONNX against the float64-accumulated NumPy reference.
FLOAT_ATOL = 1e-5
# |integer - float| of the outputs, relative to their spread: a wrong clamp or activation is far above it.
INT_VS_FLOAT = {"int8": 0.12, "16x8": 0.01}


def _quantized(case: str, scheme: str):
    kw = HEAD_CASES[case]
    model = random_model(**kw)
    x = random_inputs(kw["seed"], N=24, T=10, I=kw["I"])
    return model, grukit.quantize(model, x, scheme=scheme), x


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", HEAD_CASES)
def test_chain_quantizes_and_runs_like_the_specification(case, scheme):
    model, q, x = _quantized(case, scheme)
    assert len(q.head.layers) == len(model.head.layers)
    x_q = q.quantize_input(x)
    y_q, states = q.run_int(x_q)
    y_ref, states_ref = run_int_reference(q, x_q)
    assert_identical(y_q, y_ref, f"{case} {scheme}: fast runtime vs specification")
    fused = [d for d in q.head.layers[:-1] if d.activation in ("relu", "relu6")]
    assert all(d.prepared.qmin == d.output_q.zero_point for d in fused)  # ReLU: the clamp at the real 0
    y, y_float = q.predict(x), model.predict(x)
    spread = float(np.ptp(y_float)) or 1.0
    assert np.abs(y - y_float).max() / spread < INT_VS_FLOAT[scheme]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", HEAD_CASES)
def test_chain_is_bit_exact_in_tflite_micro(case, scheme, tmp_path):
    _, q, x = _quantized(case, scheme)
    x_q = q.quantize_input(x[:6])
    for path in (export_tflite_step(q, tmp_path / "step.tflite"),
                 export_tflite_sequence(q, tmp_path / "seq.tflite", x_q.shape[1])):
        check_result = compare_tflite_micro(q, path, x_q)
        assert check_result.bit_exact, f"{case} {scheme} {path.name}: {check_result.mismatch}"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", HEAD_CASES)
def test_chain_is_bit_exact_in_the_c_kernel(case, scheme):
    """The C kernel on the host and its Python twin: every output and state."""
    fb.require_host_cc()
    _, q, x = _quantized(case, scheme)
    x_q = q.quantize_input(x)
    y_ref, states_ref = q.run_int(x_q)
    for who, (y, states) in (("C", host.run_c_host(q, x_q)), ("twin", kernel.run_model(kernel.prepare_model(q), x_q))):
        assert_identical(y, y_ref, f"{case} {scheme} {who}: y")
        for layer, (got, expected) in enumerate(zip(states, states_ref)):
            assert_identical(got, expected, f"{case} {scheme} {who}: layer {layer} states")


def test_chain_runs_on_a_cortex_m4(tmp_path):
    fb.require_arm_tools("mps2-an386")
    _, q, x = _quantized("relu6_tanh", "int8")
    check_on_machine(Case("relu6_tanh", q, q.quantize_input(x[:3])), tmp_path, "mps2-an386")


@pytest.mark.parametrize("case", HEAD_CASES)
def test_chain_exports_to_onnx(case, tmp_path):
    model, q, x = _quantized(case, "int8")
    session = ort.InferenceSession(str(export_onnx_sequence(model, tmp_path / "seq.onnx")),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], model.predict(x), atol=FLOAT_ATOL)
    step = ort.InferenceSession(str(export_onnx_step(model, tmp_path / "step.onnx")),
                                providers=["CPUExecutionProvider"])
    h = [np.zeros((x.shape[0], layer.hidden_size), np.float32) for layer in model.layers]
    for t in range(x.shape[1]):
        y_t, *h = step.run(None, {"x_t": x[:, t], **{f"h{i}": s for i, s in enumerate(h)}})
    expected = model.predict(x)
    np.testing.assert_allclose(y_t, expected[:, -1] if model.per_step else expected, atol=FLOAT_ATOL)
    # The QDQ step model: close to the integers (the tests of test_onnx_qdq.py bound the GRU's part).
    x_q = q.quantize_input(x)
    y_steps, _ = run_onnx_qdq_steps(export_onnx_qdq(q, tmp_path / "qdq.onnx"), x_q,
                                    [layer.hidden_size for layer in q.layers])
    y_int = q.run_int(x_q)[0]
    y_qdq = y_steps if q.per_step else y_steps[:, -1]
    assert np.abs(y_qdq.astype(np.int64) - y_int).max() <= 16
