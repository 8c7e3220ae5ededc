"""Write a quantized GRU as a QDQ ONNX step model (QuantizeLinear / DequantizeLinear around float ops).

The graph is the integer step graph of ``grukit.core.graph`` written in ONNX's QDQ form, one step, for
streaming (the form the brief allowed; a sequence runs by feeding the states back, as with the TFLite step
model). Every graph tensor is quantized with the QParams the NumPy runtime uses:

    integer q --DequantizeLinear--> float --op--> float --QuantizeLinear(out qparams)--> integer q

- FULLY_CONNECTED: ``Gemm(x_dq, DequantizeLinear(w_q [O, K] int8, w_scales [O], axis=0), bias, transB=1)``.
  int32 biases are ``DequantizeLinear(bias_q, input_scale * w_scales, axis=0)``; int64 biases (16x8), which
  DequantizeLinear does not take, are stored dequantized as float32.
- ADD / SUB / MUL / LOGISTIC / TANH: Add / Sub / Mul / Sigmoid / Tanh on dequantized inputs.

Inputs ``x_t`` [N, I] and ``h{l}`` [N, H_l] and outputs ``y_t`` [N, O], ``h{l}_new`` are the integer
tensors themselves (int8, or int16 for 16x8), so a caller compares integers with the NumPy runtime.
Opset 21: the first with int16 QuantizeLinear / DequantizeLinear.

This is close to, not bit-exact with, the integer runtime: QuantizeLinear rounds halves to even, the float
ops round once at the end where TFLM rounds in fixed point, and the activations are exact functions where
TFLM uses fixed-point approximations; an LSB difference in a state is fed back at the next step.

Why Gemm and not MatMul: from onnxruntime 1.32 its default graph optimizations rewrite
``DequantizeLinear(8-bit per-channel weights) -> MatMul`` into ``MatMulNBits(bits=8, accuracy_level=4)``,
which rounds the float activations to int8 in blocks of 32 before the product (session option
``session.qdq_matmulnbits_accuracy_level``, default 4). For int8 activations that changes nothing measured;
for 16x8 it throws away 8 of the activations' 16 bits (on the demo, T = 50: states up to 791 LSB from the
integer runtime, against 59 with exact products). onnxruntime has no such rewrite of ``DequantizeLinear ->
Gemm``: int16 inputs stay float Gemm, int8 ones become QGemm (exact integer products). ``tests/test_onnx_qdq.py``
checks both facts against the installed onnxruntime, so a release that changes them is seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from grukit.core.version import __version__
from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.quantized import bias_scales
from grukit.core.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH

QDQ_OPSET = 21  # int16 QuantizeLinear/DequantizeLinear
_FLOAT_OPS = {ADD: "Add", SUB: "Sub", MUL: "Mul", LOGISTIC: "Sigmoid", TANH: "Tanh"}
_ONNX_INT = {"int8": TensorProto.INT8, "int16": TensorProto.INT16}


class _QDQGraph:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"{op_type}:{output}", **attrs))
        return output

    def qparams(self, name: str, q) -> tuple[str, str]:
        """(scale, zero point) initializers of a per-tensor QParams, made once per tensor name (its
        QuantizeLinear and DequantizeLinear share them)."""
        scale, zp = f"{name}.scale", f"{name}.zero_point"
        if not any(init.name == scale for init in self.initializers):
            self.const(scale, np.float32(q.scale))
            self.const(zp, np.array(q.zero_point, q.np_dtype))
        return scale, zp

    def dequantize(self, q_name: str, q) -> str:
        return self.op("DequantizeLinear", [q_name, *self.qparams(q_name, q)], f"{q_name}.dq")

    def quantize(self, float_name: str, out_name: str, q) -> str:
        return self.op("QuantizeLinear", [float_name, *self.qparams(out_name, q)], out_name)


def _fc(g: _QDQGraph, prefix: str, x_dq: str, fc, input_q, out_name: str, out_q, fused: str = "linear") -> str:
    O = fc.w_q.shape[0]
    w_dq = g.op("DequantizeLinear", [
        g.const(f"{prefix}.w_q", np.ascontiguousarray(fc.w_q)),  # [O, K]: Gemm's transB=1
        g.const(f"{prefix}.w_scales", fc.w_scales.astype(np.float32)),
        g.const(f"{prefix}.w_zero_points", np.zeros(O, np.int8)),
    ], f"{prefix}.w_dq", axis=0)
    inputs = [x_dq, w_dq]
    if fc.bias_q is not None:
        scales = bias_scales(input_q.scale, fc.w_scales)
        if fc.bias_q.dtype == np.int32:
            inputs.append(g.op("DequantizeLinear", [
                g.const(f"{prefix}.b_q", fc.bias_q), g.const(f"{prefix}.b_scales", scales),
                g.const(f"{prefix}.b_zero_points", np.zeros(O, np.int32)),
            ], f"{prefix}.b_dq", axis=0))
        else:
            # DequantizeLinear has no int64 input: the accumulator-scale value, rounded to float32.
            real = fc.bias_q.astype(np.float64) * float(np.float32(input_q.scale)) * fc.w_scales.astype(np.float64)
            inputs.append(g.const(f"{prefix}.b", real.astype(np.float32)))
    # Gemm, not MatMul: see the module docstring (onnxruntime >= 1.32 rounds a MatMul's int16 inputs to int8).
    acc = g.op("Gemm", inputs, f"{prefix}.acc", transB=1)
    if fused == "relu":
        acc = g.op("Relu", [acc], f"{prefix}.relu")
    elif fused == "relu6":
        acc = g.op("Clip", [acc, g.const(f"{prefix}.min", np.float32(0)), g.const(f"{prefix}.max", np.float32(6))],
                   f"{prefix}.relu6")
    return g.quantize(acc, out_name, out_q)


def _head(g: _QDQGraph, head, x_dq: str) -> None:
    """The head's dense layers: Gemm (with a fused ReLU / ReLU6), TANH / LOGISTIC ops between, into y_t."""
    last = len(head.layers) - 1
    for k, layer in enumerate(head.layers):
        prefix = "head" if last == 0 else f"head{k}"
        out_name = "y_t" if k == last else f"{prefix}.out"
        fused = layer.activation if layer.prepared.activation_min is not None else "linear"
        q = _fc(g, prefix, x_dq, layer.fc, layer.input_q, out_name, layer.output_q, fused)
        if k == last:
            return
        x_dq = g.dequantize(q, layer.output_q)
        if layer.act_op is not None:
            f = g.op(_FLOAT_OPS[layer.act_op], [x_dq], f"{prefix}.act.float")
            x_dq = g.dequantize(g.quantize(f, f"{prefix}.act", layer.act_q), layer.act_q)


def export_onnx_qdq(qmodel, path) -> Path:
    """Write ``qmodel`` (a QuantizedGRUModel) as a QDQ ONNX step model; returns the path written.

    Inputs: ``x_t`` [N, I] and ``h{l}`` [N, H_l] (integers of the model's activation type, states zero at a
    sequence's start). Outputs: ``y_t`` [N, O] (the head's integer output for this step, or the top state
    without a head) and ``h{l}_new``, fed back as ``h{l}``. The head activation is not in the graph.
    """
    if not hasattr(qmodel, "layers") or not hasattr(qmodel, "scheme"):
        raise BadInputError(f"expected a grukit QuantizedGRUModel, got a {type(qmodel).__name__}")
    if qmodel.float_model.bidirectional:
        raise UnsupportedModelError("a bidirectional GRU layer cannot be exported as a streaming step model")
    act = qmodel.input_q.dtype
    g = _QDQGraph()
    inputs = [helper.make_tensor_value_info("x_t", _ONNX_INT[act], ["N", qmodel.layers[0].input_size])]
    outputs = []
    x_dq = g.dequantize("x_t", qmodel.input_q)
    for li, layer in enumerate(qmodel.layers):
        H = layer.hidden_size
        inputs.append(helper.make_tensor_value_info(f"h{li}", _ONNX_INT[act], ["N", H]))
        outputs.append(helper.make_tensor_value_info(f"h{li}_new", _ONNX_INT[act], ["N", H]))
        dq = {"x": x_dq, "h": g.dequantize(f"h{li}", layer.qparams["h"])}
        for op in layer.ops:
            out_name = f"h{li}_new" if op.output == "h_new" else f"l{li}.{op.output}"
            out_q = layer.qparams[op.output]
            if op.kind == FULLY_CONNECTED:
                src = op.inputs[0]
                q_out = _fc(g, f"l{li}.{op.output}", dq[src], layer.fcs[op.output], layer.qparams[src], out_name, out_q)
            else:
                f = g.op(_FLOAT_OPS[op.kind], [dq[n] for n in op.inputs], f"{out_name}.float")
                q_out = g.quantize(f, out_name, out_q)
            dq[op.output] = g.dequantize(q_out, out_q)
        x_dq = dq["h_new"]  # the next layer (or the head) reads the new state's dequantized value
    if qmodel.head is None:
        g.op("Identity", [f"h{len(qmodel.layers) - 1}_new"], "y_t")
    else:
        _head(g, qmodel.head, x_dq)
    outputs.insert(0, helper.make_tensor_value_info("y_t", _ONNX_INT[act], ["N", qmodel.float_model.output_size]))
    doc = (f"grukit {qmodel.scheme} GRU step in QDQ form: integer x_t and states h{{l}} -> integer y_t and "
           f"h{{l}}_new. Close to, not bit-exact with, grukit's integer runtime and TFLite-Micro.")
    graph = helper.make_graph(g.nodes, f"{qmodel.float_model.name}_qdq_step", inputs, outputs, g.initializers,
                              doc_string=doc)
    opsets = [helper.make_opsetid("", QDQ_OPSET)]
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="grukit", producer_version=__version__, doc_string=doc)
    helper.set_model_props(proto, {
        "producer": "grukit", "grukit.model_kind": "qdq_step", "grukit.scheme": qmodel.scheme.name,
        **{f"grukit.layer{i}.gate_variant": f"linear_before_reset={layer.linear_before_reset}"
           for i, layer in enumerate(qmodel.layers)},
        "grukit.head_activation": "linear" if qmodel.head is None else qmodel.head.activation,
    })
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return path
