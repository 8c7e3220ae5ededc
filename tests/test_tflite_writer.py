"""The .tflite writer: tiny float graphs run in TFLite-Micro and LiteRT against NumPy; file layout checks."""

import numpy as np
import pytest
import tflite

from grukit.core.errors import BadInputError, UnsupportedModelError
from ai_edge_litert import interpreter as litert
from tflite_micro.python.tflite_micro import runtime as tflm_runtime

from grukit.export.tflite_read import read_metadata_buffers, read_operator_codes, read_tflite_metadata
from grukit.export.tflite_writer import TFLiteBuilder, TensorQuant

# float32 kernels accumulate in float32 in their own order; the NumPy references run in float64.
FLOAT_ATOL = 1e-5
FLOAT_RTOL = 1e-5
# TFLM's default arena (10x the file size) is too small for files of a few hundred bytes.
ARENA_BYTES = 1 << 16


def run_tflm(data: bytes, inputs: list[np.ndarray], n_outputs: int = 1) -> list[np.ndarray]:
    interp = tflm_runtime.Interpreter.from_bytes(data, arena_size=ARENA_BYTES)
    for i, x in enumerate(inputs):
        interp.set_input(x, i)
    interp.invoke()
    return [interp.get_output(i) for i in range(n_outputs)]


def run_litert(data: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    interp = litert.Interpreter(model_content=data)
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def check_both(data: bytes, inputs: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """Both interpreters must match the NumPy reference, output by output."""
    for name, got in (("TFLM", run_tflm(data, inputs, len(expected))), ("LiteRT", run_litert(data, inputs))):
        assert len(got) == len(expected), f"{name}: {len(got)} outputs, expected {len(expected)}"
        for g, e in zip(got, expected):
            assert g.shape == e.shape, f"{name}: shape {g.shape} != {e.shape}"
            np.testing.assert_allclose(g, e, rtol=FLOAT_RTOL, atol=FLOAT_ATOL, err_msg=name)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def test_fully_connected_with_bias(rng):
    W, bias, x_in = f32(rng, 5, 7), f32(rng, 5), f32(rng, 3, 7)
    b = TFLiteBuilder()
    x = b.add_tensor("x", [3, 7], "float32")
    w = b.add_tensor("w", [5, 7], "float32", data=W)
    bb = b.add_tensor("b", [5], "float32", data=bias)
    y = b.add_tensor("y", [3, 5], "float32")
    b.add_op("FULLY_CONNECTED", [x, w, bb], [y])
    b.set_io([x], [y])
    check_both(b.finish(), [x_in], [x_in.astype(np.float64) @ W.T + bias])


def test_fully_connected_without_bias_and_relu(rng):
    W, x_in = f32(rng, 4, 6), f32(rng, 2, 6)
    b = TFLiteBuilder()
    x = b.add_tensor("x", [2, 6], "float32")
    w = b.add_tensor("w", [4, 6], "float32", data=W)
    y = b.add_tensor("y", [2, 4], "float32")
    b.add_op("FULLY_CONNECTED", [x, w, -1], [y], fused_activation_function="RELU")
    b.set_io([x], [y])
    check_both(b.finish(), [x_in], [np.maximum(x_in.astype(np.float64) @ W.T, 0.0)])


@pytest.mark.parametrize("kind, ref", [
    ("ADD", np.add),
    ("SUB", np.subtract),
    ("MUL", np.multiply),
])
def test_binary_elementwise(rng, kind, ref):
    a_in, b_in = f32(rng, 2, 5), f32(rng, 2, 5)
    b = TFLiteBuilder()
    a = b.add_tensor("a", [2, 5], "float32")
    c = b.add_tensor("b", [2, 5], "float32")
    y = b.add_tensor("y", [2, 5], "float32")
    b.add_op(kind, [a, c], [y])
    b.set_io([a, c], [y])
    check_both(b.finish(), [a_in, b_in], [ref(a_in.astype(np.float64), b_in)])


def test_constant_operand_broadcast(rng):
    """ADD with a constant [5] row broadcast over a [2, 5] input: a bias-like constant."""
    a_in, row = f32(rng, 2, 5), f32(rng, 5)
    b = TFLiteBuilder()
    a = b.add_tensor("a", [2, 5], "float32")
    c = b.add_tensor("row", [5], "float32", data=row)
    y = b.add_tensor("y", [2, 5], "float32")
    b.add_op("ADD", [a, c], [y])
    b.set_io([a], [y])
    check_both(b.finish(), [a_in], [a_in.astype(np.float64) + row])


def test_logistic_tanh_chain(rng):
    """x -> LOGISTIC -> TANH -> MUL with x -> SUB from x: the shape of a GRU gate update."""
    x_in = 3 * f32(rng, 4, 8)
    b = TFLiteBuilder()
    x = b.add_tensor("x", [4, 8], "float32")
    s = b.add_tensor("s", [4, 8], "float32")
    t = b.add_tensor("t", [4, 8], "float32")
    m = b.add_tensor("m", [4, 8], "float32")
    y = b.add_tensor("y", [4, 8], "float32")
    b.add_op("LOGISTIC", [x], [s])
    b.add_op("TANH", [s], [t])
    b.add_op("MUL", [t, x], [m])
    b.add_op("SUB", [m, x], [y])
    b.set_io([x], [y])
    x64 = x_in.astype(np.float64)
    check_both(b.finish(), [x_in], [np.tanh(sigmoid(x64)) * x64 - x64])


def test_reshape_concatenation_softmax(rng):
    a_in, c_in = f32(rng, 2, 3), f32(rng, 2, 3)
    b = TFLiteBuilder()
    a = b.add_tensor("a", [2, 3], "float32")
    c = b.add_tensor("c", [2, 3], "float32")
    cat = b.add_tensor("cat", [2, 6], "float32")
    shape = b.add_tensor("shape", [2], "int32", data=np.array([3, 4], np.int32))
    r = b.add_tensor("r", [3, 4], "float32")
    y = b.add_tensor("y", [3, 4], "float32")
    b.add_op("CONCATENATION", [a, c], [cat], axis=1)
    b.add_op("RESHAPE", [cat, shape], [r], new_shape=[3, 4])
    b.add_op("SOFTMAX", [r], [y], beta=1.0)
    b.set_io([a, c], [y])
    r_ref = np.concatenate([a_in, c_in], axis=1).astype(np.float64).reshape(3, 4)
    e = np.exp(r_ref - r_ref.max(axis=1, keepdims=True))
    check_both(b.finish(), [a_in, c_in], [e / e.sum(axis=1, keepdims=True)])


def test_split_unpack_strided_slice(rng):
    """The slicing ops a converter uses to cut gate blocks out of a [B, 3H] tensor."""
    x_in = f32(rng, 2, 6)
    b = TFLiteBuilder()
    x = b.add_tensor("x", [2, 6], "float32")
    axis = b.add_tensor("axis", [], "int32", data=np.array(1, np.int32))
    parts = [b.add_tensor(f"p{i}", [2, 2], "float32") for i in range(3)]
    rows = [b.add_tensor(f"row{i}", [6], "float32") for i in range(2)]
    begin = b.add_tensor("begin", [2], "int32", data=np.array([0, 1], np.int32))
    end = b.add_tensor("end", [2], "int32", data=np.array([2, 6], np.int32))
    strides = b.add_tensor("strides", [2], "int32", data=np.array([1, 2], np.int32))
    sl = b.add_tensor("slice", [2, 3], "float32")
    b.add_op("SPLIT", [axis, x], parts)
    b.add_op("UNPACK", [x], rows, axis=0)
    b.add_op("STRIDED_SLICE", [x, begin, end, strides], [sl])
    b.set_io([x], [*parts, *rows, sl])
    expected = [x_in[:, 0:2], x_in[:, 2:4], x_in[:, 4:6], x_in[0], x_in[1], x_in[:, 1:6:2]]
    check_both(b.finish(), [x_in], expected)


def test_quantize_dequantize_round_trip(rng):
    """float -> int8 -> float: each value comes back within half a step of the scale."""
    scale, zp = 0.02, -5
    x_in = rng.uniform(-2.4, 2.4, size=(3, 4)).astype(np.float32)
    b = TFLiteBuilder()
    x = b.add_tensor("x", [3, 4], "float32")
    q = b.add_tensor("q", [3, 4], "int8", quant=TensorQuant((scale,), (zp,)))
    y = b.add_tensor("y", [3, 4], "float32")
    b.add_op("QUANTIZE", [x], [q])
    b.add_op("DEQUANTIZE", [q], [y])
    b.set_io([x], [y])
    data = b.finish()
    for name, (got,) in (("TFLM", run_tflm(data, [x_in])), ("LiteRT", run_litert(data, [x_in]))):
        # half a step, plus float32 rounding of the dequantized value
        assert np.max(np.abs(got - x_in)) <= scale / 2 + FLOAT_ATOL, name


def _shared_weight_model(share: bool, W: np.ndarray) -> bytes:
    b = TFLiteBuilder()
    x = b.add_tensor("x", [1, W.shape[1]], "float32")
    w1 = b.add_tensor("w", list(W.shape), "float32", data=W)
    w2 = w1 if share else b.add_tensor("w_copy", list(W.shape), "float32", data=W)
    y1 = b.add_tensor("y1", [1, W.shape[0]], "float32")
    y2 = b.add_tensor("y2", [1, W.shape[0]], "float32")
    y = b.add_tensor("y", [1, W.shape[0]], "float32")
    b.add_op("FULLY_CONNECTED", [x, w1, -1], [y1])
    b.add_op("FULLY_CONNECTED", [x, w2, -1], [y2], fused_activation_function="RELU")
    b.add_op("ADD", [y1, y2], [y])
    b.set_io([x], [y])
    return b.finish()


def test_shared_weight_is_stored_once(rng):
    W, x_in = f32(rng, 32, 32), f32(rng, 1, 32)
    weight_bytes = W.nbytes
    shared, copied = _shared_weight_model(True, W), _shared_weight_model(False, W)
    model_shared = tflite.Model.GetRootAs(shared, 0)
    model_copied = tflite.Model.GetRootAs(copied, 0)
    # buffer 0 (empty), the weight, the min_runtime_version metadata: 3; a copy of the weight adds one.
    assert model_shared.BuffersLength() == 3
    assert model_copied.BuffersLength() == 4
    big = [i for i in range(model_shared.BuffersLength()) if model_shared.Buffers(i).DataLength() == weight_bytes]
    assert len(big) == 1
    assert len(shared) < weight_bytes + 2048, f"file of {len(shared)} bytes for {weight_bytes} weight bytes"
    assert len(copied) - len(shared) >= weight_bytes
    x64 = x_in.astype(np.float64)
    check_both(shared, [x_in], [x64 @ W.T + np.maximum(x64 @ W.T, 0)])


def test_file_layout(rng):
    """Schema version 3, an empty buffer 0, activations on buffer 0, 16-byte aligned constant data,
    both operator code fields set."""
    W = rng.integers(-127, 128, size=(3, 5), dtype=np.int8)
    b = TFLiteBuilder(description="layout")
    x = b.add_tensor("x", [1, 5], "int16", quant=TensorQuant((0.01,), (0,)))
    w = b.add_tensor("w", [3, 5], "int8", data=W, quant=TensorQuant((0.1, 0.2, 0.3), (0, 0, 0), 0))
    bias = b.add_tensor("b", [3], "int64", data=np.array([1, -2, 3], np.int64),
                        quant=TensorQuant((0.001, 0.002, 0.003), (0, 0, 0), 0))
    y = b.add_tensor("y", [1, 3], "int16", quant=TensorQuant((0.05,), (0,)))
    b.add_op("FULLY_CONNECTED", [x, w, bias], [y])
    b.set_io([x], [y])
    data = b.finish()
    assert data[4:8] == b"TFL3"
    model = tflite.Model.GetRootAs(data, 0)
    assert model.Version() == 3
    assert model.Description() == b"layout"
    assert model.Buffers(0).DataLength() == 0
    sub = model.Subgraphs(0)
    assert sub.Tensors(x).Buffer() == 0 and sub.Tensors(y).Buffer() == 0
    for t in (w, bias):
        buf = model.Buffers(sub.Tensors(t).Buffer())
        offset = buf._tab.Vector(buf._tab.Offset(4))  # start of the data bytes in the file
        assert offset % 16 == 0, f"tensor {t} data at offset {offset}"
    np.testing.assert_array_equal(model.Buffers(sub.Tensors(bias).Buffer()).DataAsNumpy().view("<i8"), [1, -2, 3])
    q = sub.Tensors(w).Quantization()
    np.testing.assert_array_equal(q.ScaleAsNumpy(), np.float32([0.1, 0.2, 0.3]))
    assert q.QuantizedDimension() == 0
    codes = read_operator_codes(data)
    assert [(name, bc, dc) for name, bc, dc, _ in codes] == [("FULLY_CONNECTED", 9, 9)]
    # The op version must be one LiteRT registers: loading the model proves it.
    interp = litert.Interpreter(model_content=data)
    interp.allocate_tensors()
    assert read_metadata_buffers(data)["min_runtime_version"].rstrip(b"\0") == b"2.3.0"


def test_metadata_round_trip(tmp_path):
    b = TFLiteBuilder()
    x = b.add_tensor("x", [1, 2], "float32")
    y = b.add_tensor("y", [1, 2], "float32")
    b.add_op("TANH", [x], [y])
    b.set_io([x], [y])
    b.add_grukit_metadata(scheme="16x8", gate_variant="linear_before_reset=0", hidden_size=2)
    b.add_metadata("extra", b"\x00\x01\x02")
    path = tmp_path / "m.tflite"
    b.write(path)
    meta = read_tflite_metadata(path)
    assert meta["scheme"] == "16x8"
    assert meta["gate_variant"] == "linear_before_reset=0"
    assert meta["hidden_size"] == 2
    import grukit

    assert meta["grukit_version"] == grukit.__version__
    assert read_metadata_buffers(path.read_bytes())["extra"] == b"\x00\x01\x02"
    # metadata does not disturb the interpreters
    x_in = np.float32([[0.5, -1.0]])
    check_both(path.read_bytes(), [x_in], [np.tanh(x_in.astype(np.float64))])


def test_missing_metadata_is_an_error():
    b = TFLiteBuilder()
    x = b.add_tensor("x", [1], "float32")
    y = b.add_tensor("y", [1], "float32")
    b.add_op("LOGISTIC", [x], [y])
    b.set_io([x], [y])
    with pytest.raises(BadInputError, match="grukit"):
        read_tflite_metadata(b.finish())
    with pytest.raises(BadInputError, match="TFL3"):
        read_tflite_metadata(b"not a model at all")


def test_misuse_raises_naming_the_problem(rng):
    b = TFLiteBuilder()
    x = b.add_tensor("x", [1, 2], "float32")
    with pytest.raises(UnsupportedModelError, match="CONV_2D"):
        b.add_op("CONV_2D", [x], [x])
    with pytest.raises(UnsupportedModelError, match="keep_dims"):
        b.add_op("FULLY_CONNECTED", [x, x, -1], [x], keep_dims=True)
    with pytest.raises(UnsupportedModelError, match="uint8"):
        b.add_tensor("u", [1], "uint8")
    with pytest.raises(BadInputError, match="float64"):
        b.add_tensor("w", [2], "float32", data=np.zeros(2))
    with pytest.raises(BadInputError, match="shape"):
        b.add_tensor("w", [3], "float32", data=np.zeros(2, np.float32))
    with pytest.raises(BadInputError, match="channel"):
        b.add_tensor("w", [2, 3], "int8", data=np.zeros((2, 3), np.int8), quant=TensorQuant((1.0,) * 3, (0,) * 3, 0))
    with pytest.raises(BadInputError, match="set_io"):
        b.finish()
