"""Write the float GRUModel as ONNX: a whole-sequence model and a one-step streaming model.

Sequence model (``export_onnx_sequence``): one standard ONNX ``GRU`` node per layer.

    x [N, T, I] -> Transpose -> GRU(layer 0) -> ... -> GRU(layer L-1) -> head -> y

- ONNX's GRU takes ``W [D, 3H, I]``, ``R [D, 3H, H]``, ``B [D, 6H] = concat(Wb, Rb)`` with gates in the
  order z, r, h: grukit's z, r, n, so the gate blocks are copied without reordering.
- onnxruntime's CPU GRU refuses ``layout=1`` ("Batchwise recurrent operations (layout == 1) are not
  supported", checked with onnxruntime 1.31), so the batch-first input is transposed to time-major once and
  the sequence stays time-major between layers.
- A GRU node's ``Y`` is ``[T, D, N, H]``; the next layer wants ``[T, N, D*H]``: Squeeze the direction axis
  (D = 1) or Transpose to ``[T, N, 2, H]`` and Reshape to ``[T, N, 2H]`` (D = 2, forward features first,
  as ``GRULayer`` defines a bidirectional output).
- A last-step head reads the last time step of the last layer's output (not ``Y_h``: for a reverse
  direction ``Y_h`` is the state after t = 0, while grukit, like torch's ``out[:, -1]``, reads t = T-1).

Step model (``export_onnx_step``): inputs ``x_t [N, I]`` and ``h{l} [N, H]``, outputs ``y_t [N, O]`` and
``h{l}_new``. It is written with primitive ops (MatMul, Add, Sigmoid, Tanh, Mul, Sub) rather than a GRU
node: that runs on runtimes and converters without a GRU kernel and names every gate tensor
(``l0.z``, ``l0.gh_n``, ...) so a step can be inspected tensor by tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from grukit.core.version import __version__
from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.model import GATE_N, GATE_R, GATE_Z, GATES, GRUDirection, GRUModel

# GRU-14 is the current GRU definition (it added ``layout``); Softmax-13 normalises over one axis only.
MIN_OPSET = 14
DEFAULT_OPSET = 17


class _Graph:
    """Collects nodes and initializers; every tensor gets a readable, unique name."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        # np.array, not ascontiguousarray: the latter turns a 0-d index into shape [1].
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | list[str], **attrs) -> str | list[str]:
        outputs = [output] if isinstance(output, str) else list(output)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"{op_type}:{outputs[0]}", **attrs))
        return output


def _check_opset(opset: int) -> int:
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise BadInputError(f"ONNX opset {opset!r} is not supported; use {MIN_OPSET} to {newest}")
    return opset


def _check_model(model) -> GRUModel:
    if not isinstance(model, GRUModel):
        raise BadInputError(f"expected a grukit GRUModel, got a {type(model).__name__}")
    return model


def _activation(g: _Graph, x: str, activation: str, out: str) -> str:
    """A dense layer's activation in ONNX ops (HEAD_ACTIVATIONS)."""
    if activation == "linear":
        return g.op("Identity", [x], out)
    if activation == "relu":
        return g.op("Relu", [x], out)
    if activation == "relu6":
        return g.op("Clip", [x, g.const(f"{out}.min", np.float32(0)), g.const(f"{out}.max", np.float32(6))], out)
    if activation in ("tanh", "sigmoid"):
        return g.op(activation.capitalize(), [x], out)
    if activation == "softmax":
        return g.op("Softmax", [x], out, axis=-1)
    raise UnsupportedModelError(f"activation {activation!r} has no ONNX export")


def _head(g: _Graph, model: GRUModel, features: str, out: str) -> str:
    """y = the head's dense layers on the last axis of ``features``, or features itself without a head."""
    head = model.head
    if head is None:
        return g.op("Identity", [features], out)
    x = features
    last = len(head.layers) - 1
    for k, dense in enumerate(head.layers):
        prefix = "head" if last == 0 else f"head{k}"
        W_t = g.const(f"{prefix}.W_T", dense.W.T)  # [F, O]: MatMul multiplies on the right
        b = g.const(f"{prefix}.b", dense.b)
        matmul = g.op("MatMul", [x, W_t], f"{prefix}.matmul")
        if k == last and dense.activation == "linear":
            return g.op("Add", [matmul, b], out)
        logits = g.op("Add", [matmul, b], f"{prefix}.logits")
        x = _activation(g, logits, dense.activation, out if k == last else f"{prefix}.out")
    return x


def _metadata(model: GRUModel, kind: str) -> dict[str, str]:
    props = {
        "producer": "grukit",
        "grukit.model_kind": kind,
        "grukit.gate_order": ",".join(GATES),
        "grukit.layers": str(len(model.layers)),
    }
    for i, layer in enumerate(model.layers):
        props[f"grukit.layer{i}.gate_variant"] = f"linear_before_reset={layer.linear_before_reset}"
        props[f"grukit.layer{i}.hidden_size"] = str(layer.hidden_size)
        props[f"grukit.layer{i}.bidirectional"] = str(int(layer.bidirectional))
    if model.head is None:
        props["grukit.head"] = "none (output: last layer's state at the last step)"
    else:
        props["grukit.head"] = "per_step" if model.head.per_step else "last_step"
        props["grukit.head_activation"] = model.head.activation
        props["grukit.head_layers"] = ",".join(f"{d.out_features}:{d.activation}" for d in model.head.layers)
    if model.source:
        props["grukit.source"] = model.source
    return props


def _save(g: _Graph, model: GRUModel, path, opset: int, inputs, outputs, kind: str, doc: str) -> Path:
    graph = helper.make_graph(g.nodes, f"{model.name}_{kind}", inputs, outputs, g.initializers, doc_string=doc)
    opset_ids = [helper.make_opsetid("", opset)]
    # The lowest IR version that carries this opset, so runtimes that lag onnx's newest IR still open it.
    proto = helper.make_model(
        graph,
        opset_imports=opset_ids,
        ir_version=helper.find_min_ir_version_for(opset_ids),
        producer_name="grukit",
        producer_version=__version__,
        doc_string=doc,
    )
    helper.set_model_props(proto, _metadata(model, kind))
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One self-contained file: weights as initializers, no external data.
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return path


def export_onnx_sequence(model: GRUModel, path, opset: int = DEFAULT_OPSET) -> Path:
    """Write the float model as an ONNX model over whole sequences; returns the path written.

    Input ``x`` float32 [N, T, I] (batch-first, N and T dynamic). Output ``y`` float32 [N, O] for a last-step
    head, [N, T, O] for a per-step head; without a head, the last layer's output at the last step
    [N, H or 2H]. One ONNX ``GRU`` node per layer, bidirectional layers included. ``opset`` is the ONNX
    default-domain opset, from 14 to the newest this onnx knows.
    """
    model = _check_model(model)
    opset = _check_opset(opset)
    g = _Graph()
    seq = g.op("Transpose", ["x"], "x_time_major", perm=[1, 0, 2])  # [T, N, I]
    for i, layer in enumerate(model.layers):
        dirs = layer.directions
        H = layer.hidden_size
        W = g.const(f"l{i}.W", np.stack([d.W.reshape(3 * H, d.input_size) for d in dirs]))  # [D, 3H, I]
        R = g.const(f"l{i}.R", np.stack([d.R.reshape(3 * H, H) for d in dirs]))  # [D, 3H, H]
        B = g.const(f"l{i}.B", np.stack([np.concatenate([d.Wb.ravel(), d.Rb.ravel()]) for d in dirs]))
        # Optional inputs sequence_lens and initial_h are left out: full-length sequences from a zero state.
        Y = g.op(
            "GRU",
            [seq, W, R, B],
            f"l{i}.Y",  # [T, D, N, H]
            hidden_size=H,
            linear_before_reset=layer.linear_before_reset,
            direction="bidirectional" if layer.bidirectional else "forward",
        )
        if layer.bidirectional:
            by_step = g.op("Transpose", [Y], f"l{i}.Y_tnd", perm=[0, 2, 1, 3])  # [T, N, 2, H]
            # Reshape's 0 copies T and N from the input, so both stay dynamic.
            seq = g.op("Reshape", [by_step, g.const(f"l{i}.shape_tnf", np.array([0, 0, 2 * H], np.int64))],
                       f"l{i}.out")
        else:
            seq = g.op("Squeeze", [Y, g.const(f"l{i}.direction_axis", np.array([1], np.int64))], f"l{i}.out")
    F = model.layers[-1].output_size
    if model.per_step:
        features = g.op("Transpose", [seq], "features", perm=[1, 0, 2])  # [N, T, F]
        y_shape = ["N", "T", model.output_size]
    else:
        features = g.op("Gather", [seq, g.const("last_step", np.array(-1, np.int64))], "features", axis=0)  # [N, F]
        y_shape = ["N", model.output_size]
    _head(g, model, features, "y")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", model.input_size])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
    doc = (
        f"grukit float GRU, whole sequence: x [N, T, {model.input_size}] batch-first -> y {y_shape}. "
        f"{len(model.layers)} ONNX GRU node(s), zero initial state; last layer width {F}."
    )
    return _save(g, model, path, opset, inputs, outputs, "sequence", doc)


def _direction_step(g: _Graph, d: GRUDirection, linear_before_reset: int, p: str, x: str, h: str, h_new: str):
    """One step of one direction with primitive ops, written as the ONNX GRU definition reads."""
    def side(gate: int, src: str, weights: np.ndarray, bias: np.ndarray, name: str) -> str:
        W_t = g.const(f"{p}.{name}.W_T", weights[gate].T)  # [in, H]
        prod = g.op("MatMul", [src, W_t], f"{p}.{name}.matmul")
        return g.op("Add", [prod, g.const(f"{p}.{name}.b", bias[gate])], f"{p}.{name}")

    gx_z = side(GATE_Z, x, d.W, d.Wb, "gx_z")
    gx_r = side(GATE_R, x, d.W, d.Wb, "gx_r")
    gx_n = side(GATE_N, x, d.W, d.Wb, "gx_n")
    gh_z = side(GATE_Z, h, d.R, d.Rb, "gh_z")
    gh_r = side(GATE_R, h, d.R, d.Rb, "gh_r")
    z = g.op("Sigmoid", [g.op("Add", [gx_z, gh_z], f"{p}.z_pre")], f"{p}.z")
    r = g.op("Sigmoid", [g.op("Add", [gx_r, gh_r], f"{p}.r_pre")], f"{p}.r")
    if linear_before_reset:
        # n = tanh(W_n x + Wb_n + r * (R_n h + Rb_n))
        gh_n = side(GATE_N, h, d.R, d.Rb, "gh_n")
        n_pre = g.op("Add", [gx_n, g.op("Mul", [r, gh_n], f"{p}.r_gh")], f"{p}.n_pre")
    else:
        # n = tanh(W_n x + Wb_n + R_n (r * h) + Rb_n)
        r_h = g.op("Mul", [r, h], f"{p}.r_h")
        gh_n = side(GATE_N, r_h, d.R, d.Rb, "gh_n")
        n_pre = g.op("Add", [gx_n, gh_n], f"{p}.n_pre")
    n = g.op("Tanh", [n_pre], f"{p}.n")
    # h_new = (1 - z) * n + z * h, written n + z * (h - n) to save an op.
    h_minus_n = g.op("Sub", [h, n], f"{p}.h_minus_n")
    g.op("Add", [n, g.op("Mul", [z, h_minus_n], f"{p}.z_diff")], h_new)


def export_onnx_step(model: GRUModel, path, opset: int = DEFAULT_OPSET) -> Path:
    """Write one time step of the float model as ONNX, for streaming; returns the path written.

    Inputs: ``x_t`` float32 [N, I] and ``h{l}`` float32 [N, H_l] for each layer l (zeros before the first
    step). Outputs: ``y_t`` [N, O] (the head applied to this step's last-layer state; the state itself
    without a head) and ``h{l}_new`` [N, H_l], which the caller feeds back as ``h{l}`` on the next step.
    With a last-step head the model still emits ``y_t`` every step; the sequence's answer is the final
    step's ``y_t``. Bidirectional models are refused: the reverse direction needs the whole sequence.
    """
    model = _check_model(model)
    opset = _check_opset(opset)
    if model.bidirectional:
        raise UnsupportedModelError("a streaming step model cannot run a bidirectional layer")
    g = _Graph()
    inputs = [helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["N", model.input_size])]
    outputs = []
    x = "x_t"
    for i, layer in enumerate(model.layers):
        H = layer.hidden_size
        inputs.append(helper.make_tensor_value_info(f"h{i}", TensorProto.FLOAT, ["N", H]))
        outputs.append(helper.make_tensor_value_info(f"h{i}_new", TensorProto.FLOAT, ["N", H]))
        _direction_step(g, layer.forward, layer.linear_before_reset, f"l{i}", x, f"h{i}", f"h{i}_new")
        x = f"h{i}_new"
    _head(g, model, x, "y_t")
    outputs.insert(0, helper.make_tensor_value_info("y_t", TensorProto.FLOAT, ["N", model.output_size]))
    state_names = ", ".join(f"h{i}" for i in range(len(model.layers)))
    doc = (
        f"grukit float GRU, one step: x_t [N, {model.input_size}] and states {state_names} -> y_t and the new "
        f"states h{{l}}_new. Start from zero states, feed each h{{l}}_new back as h{{l}}."
        + (" The head is a last-step head: use y_t of the final step." if model.head and not model.per_step else "")
    )
    return _save(g, model, path, opset, inputs, outputs, "step", doc)
