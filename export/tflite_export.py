"""Write grukit GRUs as ``.tflite`` files: a one-step streaming model and a fixed-length sequence model.

Both forms walk ``grukit.core.graph.step_ops`` and emit exactly one TFLite op per graph op, in graph
order, so TFLite-Micro executes the same integer ops on the same parameters as the NumPy runtime
(``grukit.runtime.int_gru``) and lands on the same integers:

- weights: int8 constants [O, K], symmetric per output channel (quantized_dimension 0);
- biases: int32 (int8 scheme) or int64 (16x8) constants, scales float32(input_scale * w_scale[o]);
- every activation tensor carries the layer's QParams for that graph tensor; TFLM recomputes its
  multipliers from those float32 scales exactly as ``grukit.quantize.prepare`` does.

Step model (``export_tflite_step``), batch 1, the device form::

    inputs  x_t [1, I], h0 [1, H0], ..., h{L-1}              (model input dtype; states in their own qparams)
    outputs y_t [1, O], h0_new [1, H0], ..., h{L-1}_new

``y_t`` is the head applied to this step's top state (for a last-step head, the final step's ``y_t`` is the
answer) or, without a head, a copy (RESHAPE) of the top state. Feed each ``h{l}_new`` back as ``h{l}``;
start from zeros.

Sequence model (``export_tflite_sequence``), batch 1, a fixed T: input ``x [1, T, I]``, UNPACK along time,
the step graph unrolled T times from all-zero constant initial states (one constant per layer: the
sequence model is "one call per independent sequence"; streaming uses the step model). Every weight and
bias tensor is stored once and referenced by all T steps' ops. Output ``y [1, O]`` (last-step head, or the
top state without a head) or ``y [1, T, O]`` for a per-step head: the top states are joined with
CONCATENATION (at most 10 inputs per op, TFLM's limit; it copies int8/int16 without requantizing, all
inputs sharing the state's qparams), the head runs once on [T, H], and a RESHAPE adds the batch axis.

The head's activation (softmax/sigmoid) is not in the file: the integer output is the head's logits, as in
``QuantizedGRUModel.predict_int``; the metadata names the activation for the caller to apply.

Float variants (``export_tflite_step_float`` / ``export_tflite_sequence_float``) write the same graph in
float32 from the float ``GRUModel`` (biases grouped as ``split_biases`` groups them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.export.tflite_writer import TFLiteBuilder, TensorQuant
from grukit.core.model import GATES, GRUModel
from grukit.core.quantized import bias_scales
from grukit.core.graph import FULLY_CONNECTED, split_biases, step_ops

# TFLite-Micro's CONCATENATION takes at most this many inputs (kMaxInputNum in concatenation.cc).
CONCAT_MAX_INPUTS = 10
FLOAT = "float32"
KIND_STEP = "step"
KIND_SEQUENCE = "sequence"


# ---------------------------------------------------------------------------------------------------------
# What a network needs to be written: one description for the integer and the float case
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Const:
    """A constant tensor: data of ``dtype`` and its quantization (None for float)."""

    data: np.ndarray
    dtype: str
    quant: object


@dataclass(frozen=True)
class _FC:
    weight: _Const
    bias: _Const | None


@dataclass(frozen=True)
class _DenseSpec:
    """One dense layer of the head: its FULLY_CONNECTED (``fused``: TFLite's fused activation, "NONE",
    "RELU" or "RELU6"), its output quantization, and the LOGISTIC / TANH op after it (``act_op``) if any."""

    fc: _FC
    out_quant: object
    fused: str = "NONE"
    act_op: str | None = None
    act_quant: object = None


@dataclass(frozen=True)
class _LayerSpec:
    linear_before_reset: int
    input_size: int
    hidden_size: int
    quant: dict  # graph tensor name -> QParams (integer); empty for float
    fcs: dict  # FC output name -> _FC


@dataclass(frozen=True)
class _NetSpec:
    scheme: str  # "int8", "16x8" or "float32"
    act_dtype: str  # "int8", "int16" or "float32"
    layers: tuple
    head: tuple  # of _DenseSpec; () without a head
    per_step: bool
    head_activation: str
    input_quant: object
    output_quant: object

    def tensor_quant(self, layer: _LayerSpec, name: str):
        return layer.quant.get(name) if layer.quant else None


def _refuse_bidirectional(model: GRUModel) -> None:
    if model.bidirectional:
        raise UnsupportedModelError(
            "a bidirectional GRU layer cannot be exported to .tflite: the step graph runs forward in time only")


def _qparams_record(q) -> dict | None:
    return None if q is None else {"scale": q.scale, "zero_point": q.zero_point, "dtype": q.dtype}


def _int_spec(qmodel) -> _NetSpec:
    """The integer network of a QuantizedGRUModel: its int8 weights, int32/int64 biases and QParams."""
    if not hasattr(qmodel, "layers") or not hasattr(qmodel, "scheme"):
        raise BadInputError(f"expected a grukit QuantizedGRUModel, got a {type(qmodel).__name__}")
    _refuse_bidirectional(qmodel.float_model)
    act = qmodel.input_q.dtype
    bias_dtype = qmodel.scheme.bias

    def fc_consts(fc, input_q) -> _FC:
        O = fc.w_q.shape[0]
        zeros = np.zeros(O, np.int64)
        weight = _Const(fc.w_q, "int8", TensorQuant(fc.w_scales, zeros, 0))
        bias = None
        if fc.bias_q is not None:
            if fc.bias_q.dtype != np.dtype(bias_dtype):
                raise UnsupportedModelError(f"{qmodel.scheme} bias must be {bias_dtype}, got {fc.bias_q.dtype}")
            bias = _Const(fc.bias_q, bias_dtype, TensorQuant(bias_scales(input_q.scale, fc.w_scales), zeros, 0))
        return _FC(weight, bias)

    layers = []
    for ql in qmodel.layers:
        fcs = {op.output: fc_consts(ql.fcs[op.output], ql.qparams[op.inputs[0]])
               for op in ql.ops if op.kind == FULLY_CONNECTED}
        layers.append(_LayerSpec(ql.linear_before_reset, ql.input_size, ql.hidden_size, dict(ql.qparams), fcs))
    head = qmodel.head
    dense = () if head is None else tuple(
        _DenseSpec(fc_consts(d.fc, d.input_q), d.output_q,
                   _FUSED[d.activation] if d.prepared.activation_min is not None else "NONE", d.act_op, d.act_q)
        for d in head.layers)
    return _NetSpec(
        scheme=qmodel.scheme.name, act_dtype=act, layers=tuple(layers), head=dense,
        per_step=qmodel.per_step, head_activation="linear" if head is None else head.activation,
        input_quant=qmodel.input_q, output_quant=qmodel.output_q,
    )


# TFLite's fused activation of a FULLY_CONNECTED, for the head's activations it fuses.
_FUSED = {"relu": "RELU", "relu6": "RELU6"}


def _float_dense(d, last: bool, f32) -> _DenseSpec:
    """A float dense layer: a ReLU / ReLU6 before the last layer fused, a tanh / sigmoid there an op after; the
    last layer's activation is left to the caller (the metadata names it), as in the integer files."""
    fused = _FUSED.get(d.activation, "NONE") if not last else "NONE"
    act_op = {"tanh": "TANH", "sigmoid": "LOGISTIC"}.get(d.activation) if not last else None
    return _DenseSpec(_FC(f32(d.W), f32(d.b)), None, fused, act_op, None)


def _float_spec(model: GRUModel) -> _NetSpec:
    """The float32 network of a GRUModel, with the biases grouped as the step graph adds them."""
    if not isinstance(model, GRUModel):
        raise BadInputError(f"expected a grukit GRUModel, got a {type(model).__name__}")
    _refuse_bidirectional(model)
    f32 = lambda a: _Const(np.ascontiguousarray(a, np.float32), FLOAT, None)
    layers = []
    for layer in model.layers:
        d = layer.forward
        biases = dict(zip(("bx", "bh"), split_biases(d, layer.linear_before_reset)))
        fcs = {}
        for op in step_ops(layer.linear_before_reset):
            if op.kind == FULLY_CONNECTED:
                W = (d.W if op.weight == "W" else d.R)[op.gate]
                fcs[op.output] = _FC(f32(W), None if op.bias is None else f32(biases[op.bias][op.gate]))
        layers.append(_LayerSpec(layer.linear_before_reset, layer.input_size, layer.hidden_size, {}, fcs))
    head = model.head
    dense = () if head is None else tuple(_float_dense(d, k == len(head.layers) - 1, f32)
                                          for k, d in enumerate(head.layers))
    return _NetSpec(
        scheme=FLOAT, act_dtype=FLOAT, layers=tuple(layers), head=dense, per_step=model.per_step,
        head_activation="linear" if head is None else head.activation,
        input_quant=None, output_quant=None,
    )


# ---------------------------------------------------------------------------------------------------------
# Graph building
# ---------------------------------------------------------------------------------------------------------


def _add_const(b: TFLiteBuilder, name: str, c: _Const) -> int:
    return b.add_tensor(name, list(c.data.shape), c.dtype, data=c.data, quant=c.quant)


def _add_fc_consts(b: TFLiteBuilder, prefix: str, fc: _FC) -> tuple[int, int]:
    """Store one FC's weight and bias once; returns (weight index, bias index or -1)."""
    w = _add_const(b, f"{prefix}.w", fc.weight)
    bias = -1 if fc.bias is None else _add_const(b, f"{prefix}.b", fc.bias)
    return w, bias


def _add_layer_consts(b: TFLiteBuilder, li: int, layer: _LayerSpec) -> dict[str, tuple[int, int]]:
    return {name: _add_fc_consts(b, f"l{li}.{name}", fc) for name, fc in layer.fcs.items()}


def _add_layer_step(b: TFLiteBuilder, net: _NetSpec, li: int, consts: dict, x: int, h: int,
                    prefix: str, h_new_name: str) -> int:
    """Append one step of layer ``li``: one TFLite op per graph op, in graph order. Returns h_new's index."""
    layer = net.layers[li]
    H = layer.hidden_size
    env = {"x": x, "h": h}
    for op in step_ops(layer.linear_before_reset):
        name = h_new_name if op.output == "h_new" else f"{prefix}l{li}.{op.output}"
        out = b.add_tensor(name, [1, H], net.act_dtype, quant=net.tensor_quant(layer, op.output))
        if op.kind == FULLY_CONNECTED:
            w, bias = consts[op.output]
            b.add_op(FULLY_CONNECTED, [env[op.inputs[0]], w, bias], [out])
        else:
            b.add_op(op.kind, [env[n] for n in op.inputs], [out])
        env[op.output] = out
    return env["h_new"]


def _add_reshape(b: TFLiteBuilder, net: _NetSpec, src: int, name: str, shape, quant) -> int:
    shape_const = b.add_tensor(f"{name}.shape", [len(shape)], "int32", data=np.asarray(shape, np.int32))
    out = b.add_tensor(name, list(shape), net.act_dtype, quant=quant)
    b.add_op("RESHAPE", [src, shape_const], [out], new_shape=list(shape))
    return out


def _add_head_consts(b: TFLiteBuilder, net: _NetSpec) -> list[tuple[int, int]]:
    """Store the head's weights and biases once; (weight, bias) per dense layer."""
    last = len(net.head) - 1
    return [_add_fc_consts(b, "head" if last == 0 else f"head{k}", d.fc) for k, d in enumerate(net.head)]


def _add_output(b: TFLiteBuilder, net: _NetSpec, head_consts, top: int, rows: int, name: str) -> int:
    """The head on ``top`` [rows, H] -> [rows, O]: one FULLY_CONNECTED per dense layer (its ReLU / ReLU6
    fused) and a LOGISTIC / TANH op after a layer that has one; without a head a RESHAPE copy of ``top``."""
    if not net.head:
        H = net.layers[-1].hidden_size
        return _add_reshape(b, net, top, name, [rows, H], net.output_quant)
    x = top
    last = len(net.head) - 1
    for k, (d, consts) in enumerate(zip(net.head, head_consts)):
        O = d.fc.weight.data.shape[0]
        out = b.add_tensor(name if k == last else f"{name}.head{k}", [rows, O], net.act_dtype, quant=d.out_quant)
        b.add_op(FULLY_CONNECTED, [x, *consts], [out], fused_activation_function=d.fused)
        x = out
        if d.act_op is not None:
            x = b.add_tensor(f"{name}.head{k}.act", [rows, O], net.act_dtype, quant=d.act_quant)
            b.add_op(d.act_op, [out], [x])
    return x


def _add_concat_rows(b: TFLiteBuilder, net: _NetSpec, parts: list[int], width: int, quant, prefix: str) -> int:
    """Join [1, width] tensors into [len(parts), width] with CONCATENATION ops of at most
    CONCAT_MAX_INPUTS inputs each (a tree when there are more)."""
    level = 0
    rows = [1] * len(parts)
    while len(parts) > 1:
        new_parts, new_rows = [], []
        for g in range(0, len(parts), CONCAT_MAX_INPUTS):
            group, group_rows = parts[g:g + CONCAT_MAX_INPUTS], rows[g:g + CONCAT_MAX_INPUTS]
            if len(group) == 1:
                new_parts.append(group[0])
                new_rows.append(group_rows[0])
                continue
            out = b.add_tensor(f"{prefix}{level}.{g}", [sum(group_rows), width], net.act_dtype, quant=quant)
            b.add_op("CONCATENATION", group, [out], axis=0)
            new_parts.append(out)
            new_rows.append(sum(group_rows))
        parts, rows, level = new_parts, new_rows, level + 1
    return parts[0]


def _metadata(b: TFLiteBuilder, net: _NetSpec, kind: str, T: int | None) -> None:
    variants = [f"linear_before_reset={layer.linear_before_reset}" for layer in net.layers]
    b.add_grukit_metadata(
        scheme=net.scheme,
        gate_variant=",".join(variants),
        kind=kind,
        T=T,
        batch=1,
        gate_order=",".join(GATES),
        layers=[{"gate_variant": v, "input_size": layer.input_size, "hidden_size": layer.hidden_size,
                 "state": _qparams_record(layer.quant.get("h") if layer.quant else None)}
                for v, layer in zip(variants, net.layers)],
        head=None if not net.head else {"per_step": net.per_step, "activation": net.head_activation,
                                        "layers": [{"out_features": int(d.fc.weight.data.shape[0]),
                                                    "fused": d.fused, "activation_op": d.act_op}
                                                   for d in net.head]},
        input=_qparams_record(net.input_quant),
        output=_qparams_record(net.output_quant),
    )


def _write(b: TFLiteBuilder, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    b.write(path)
    return path


def _build_step(net: _NetSpec, name: str) -> TFLiteBuilder:
    b = TFLiteBuilder(description=f"grukit {name}: one GRU step ({net.scheme}), batch 1")
    x_t = b.add_tensor("x_t", [1, net.layers[0].input_size], net.act_dtype, quant=net.input_quant)
    states = [b.add_tensor(f"h{li}", [1, layer.hidden_size], net.act_dtype, quant=net.tensor_quant(layer, "h"))
              for li, layer in enumerate(net.layers)]
    consts = [_add_layer_consts(b, li, layer) for li, layer in enumerate(net.layers)]
    head_consts = _add_head_consts(b, net)
    new_states = []
    x = x_t
    for li in range(len(net.layers)):
        x = _add_layer_step(b, net, li, consts[li], x, states[li], "", f"h{li}_new")
        new_states.append(x)
    y = _add_output(b, net, head_consts, x, 1, "y_t")
    b.set_io([x_t, *states], [y, *new_states])
    _metadata(b, net, KIND_STEP, None)
    return b


def _build_sequence(net: _NetSpec, name: str, T: int) -> TFLiteBuilder:
    if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
        raise BadInputError(f"sequence length T must be a positive integer, got {T!r}")
    T = int(T)
    I = net.layers[0].input_size
    b = TFLiteBuilder(description=f"grukit {name}: GRU over T={T} steps ({net.scheme}), batch 1")
    x = b.add_tensor("x", [1, T, I], net.act_dtype, quant=net.input_quant)
    consts = [_add_layer_consts(b, li, layer) for li, layer in enumerate(net.layers)]
    head_consts = _add_head_consts(b, net)
    states = []
    for li, layer in enumerate(net.layers):
        zeros = np.zeros((1, layer.hidden_size), np.float32 if net.act_dtype == FLOAT else np.dtype(net.act_dtype))
        states.append(b.add_tensor(f"h{li}_init", [1, layer.hidden_size], net.act_dtype, data=zeros,
                                   quant=net.tensor_quant(layer, "h")))
    x_steps = [b.add_tensor(f"x.t{t}", [1, I], net.act_dtype, quant=net.input_quant) for t in range(T)]
    b.add_op("UNPACK", [x], x_steps, axis=1)
    tops = []
    for t in range(T):
        inp = x_steps[t]
        for li in range(len(net.layers)):
            states[li] = _add_layer_step(b, net, li, consts[li], inp, states[li], f"t{t}.", f"t{t}.h{li}_new")
            inp = states[li]
        tops.append(inp)
    if net.per_step:
        H = net.layers[-1].hidden_size
        joined = _add_concat_rows(b, net, tops, H, net.tensor_quant(net.layers[-1], "h"), "tops.")
        y_rows = _add_output(b, net, head_consts, joined, T, "y_rows")
        y = _add_reshape(b, net, y_rows, "y", [1, T, net.head[-1].fc.weight.data.shape[0]], net.output_quant)
    else:
        y = _add_output(b, net, head_consts, tops[-1], 1, "y")
    b.set_io([x], [y])
    _metadata(b, net, KIND_SEQUENCE, T)
    return b


# ---------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------


def export_tflite_step(qmodel, path) -> Path:
    """Write the quantized model's one-step streaming graph (batch 1) as ``.tflite``; returns the path.

    Inputs ``x_t`` [1, I] (the model input dtype and qparams) and ``h{l}`` [1, H_l] per layer; outputs
    ``y_t`` [1, O] and ``h{l}_new``. Bit-exact with ``qmodel.stream(1)`` in TFLite-Micro.
    """
    return _write(_build_step(_int_spec(qmodel), qmodel.float_model.name), path)


def export_tflite_sequence(qmodel, path, T: int) -> Path:
    """Write the quantized model unrolled over a fixed ``T`` (batch 1) as ``.tflite``; returns the path.

    Input ``x`` [1, T, I]; output ``y`` [1, O] (last-step head or top state) or [1, T, O] (per-step head);
    zero initial states. Bit-exact with ``qmodel.predict_int`` in TFLite-Micro.
    """
    return _write(_build_sequence(_int_spec(qmodel), qmodel.float_model.name, T), path)


def export_tflite_step_float(model: GRUModel, path) -> Path:
    """The float32 step model of a GRUModel (same inputs and outputs as ``export_tflite_step``)."""
    return _write(_build_step(_float_spec(model), model.name), path)


def export_tflite_sequence_float(model: GRUModel, path, T: int) -> Path:
    """The float32 sequence model of a GRUModel (same shapes as ``export_tflite_sequence``)."""
    return _write(_build_sequence(_float_spec(model), model.name, T), path)


def export_tflite(qmodel, path) -> Path:
    """The pipeline's single TFLite entry: the integer step model (``export_tflite_step``)."""
    return export_tflite_step(qmodel, path)


def tflite_file_names(scheme: str | None, T: int) -> dict[str, str]:
    """The file names ``export_tflite_all`` writes, keyed by their role."""
    names = {"float_step": "model_float_step.tflite", "float_seq": f"model_float_seq_T{T}.tflite"}
    if scheme is not None:
        names[f"{scheme}_step"] = f"model_{scheme}_step.tflite"
        names[f"{scheme}_seq"] = f"model_{scheme}_seq_T{T}.tflite"
    return names


def export_tflite_all(model: GRUModel, qmodel, out_dir, T: int) -> dict[str, Path]:
    """Write the float and integer step and sequence models into ``out_dir``; returns role -> path.

    Roles: ``float_step``, ``float_seq``, ``{scheme}_step``, ``{scheme}_seq`` (the integer ones only when
    ``qmodel`` is given), named e.g. ``model_float_step.tflite``, ``model_int8_seq_T50.tflite``.
    """
    out_dir = Path(out_dir)
    names = tflite_file_names(None if qmodel is None else qmodel.scheme.name, T)
    paths = {
        "float_step": export_tflite_step_float(model, out_dir / names["float_step"]),
        "float_seq": export_tflite_sequence_float(model, out_dir / names["float_seq"], T),
    }
    if qmodel is not None:
        paths[f"{qmodel.scheme}_step"] = export_tflite_step(qmodel, out_dir / names[f"{qmodel.scheme}_step"])
        paths[f"{qmodel.scheme}_seq"] = export_tflite_sequence(qmodel, out_dir / names[f"{qmodel.scheme}_seq"], T)
    return paths


__all__ = [
    "export_tflite", "export_tflite_all", "export_tflite_step", "export_tflite_sequence",
    "export_tflite_step_float", "export_tflite_sequence_float", "tflite_file_names",
]
