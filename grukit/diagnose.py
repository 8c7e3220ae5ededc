"""Why a quantized GRU loses accuracy: the error of every tensor, and what each group of tensors costs.

Two views, both on the validation data the report scores:

``tensor_errors``: every tensor of the integer step graph, dequantized, against the float model's value of
the same tensor in the same run (the integer specification runtime op by op beside the float reference),
in the tensor's own units, in LSB (steps of its quantization grid) and relative to its quantized range,
per time step. The error of a tensor includes what reached it from earlier steps and layers.

``sensitivity``: a fake-quantized float run (``grukit.core.float_gru``'s ``fake`` hook: every tensor rounded
and clamped to its grid, the weights and biases replaced by their dequantized integers) stands in for the
integer model; then one group of tensors at a time is left in float, and the share of the metric's loss
that recovers is that group's cost. The simulation is not the integer model (its sigmoid and tanh are exact,
the integer ones are fixed-point approximations): the report gives its own metric beside the integer
runtime's, so the reader sees how close the stand-in is. Each group comes with what to do about it: a range
problem (values clipped) asks for a wider range or more representative calibration data; a resolution
problem asks for 16x8.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from grukit.core.float_gru import layers_forward, output_from_states
from grukit.core.graph import FULLY_CONNECTED
from grukit.core.model import Dense, GRUDirection, GRUModel
from grukit.metrics import score
from grukit.quantize.calibrate import CAP_TOLERANCE
from grukit.runtime.int_gru_reference import head_forward_int, layer_forward_int_reference

# Sequences the op-by-op runs read: the specification runtime is slow (one NumPy call per op per step).
DIAGNOSE_MAX_STEPS = 20_000

# Each layer's tensors in groups that share a remedy (names of grukit.core.graph).
GROUPS = {
    "input": ("x",),
    "state": ("h",),
    "gate products": ("gx_z", "gx_r", "gx_n", "gh_z", "gh_r", "gh_n"),
    "gate pre-activations": ("z_pre", "r_pre", "n_pre"),
    "gate outputs": ("z", "r", "n"),
    "element-wise products": ("r_gh", "r_h", "h_minus_n", "z_diff"),
}


def diagnose_sequences(n: int, T: int) -> int:
    return max(1, min(n, DIAGNOSE_MAX_STEPS // T))


def _tensor_name(qmodel, layer: int, name: str) -> str:
    return f"layer{layer}/{name}" if layer < len(qmodel.layers) else name


def tensor_errors(qmodel, x: np.ndarray) -> dict[str, dict]:
    """{tensor -> {rmse, rmse_lsb, max_abs, relative: rmse / width of the quantized range, per_step_lsb:
    [rmse in LSB at each step]}} on x [N, T, I] (module docstring)."""
    model = qmodel.float_model
    float_values: dict[tuple[int, str], list] = {}
    record = lambda layer, name, v: float_values.setdefault((layer, name), []).append(v)  # noqa: E731
    output_from_states(model, layers_forward(model, x, record), record)
    int_values: dict[tuple[int, str], list] = {}
    seq = qmodel.quantize_input(x)
    for li, layer in enumerate(qmodel.layers):
        int_values[(li, "x")] = [seq[:, t] for t in range(seq.shape[1])]
        seq = layer_forward_int_reference(
            layer, seq, observe=lambda name, v, li=li: int_values.setdefault((li, name), []).append(v))
    top = len(qmodel.layers)
    if qmodel.head is not None:
        head_forward_int(qmodel.head, seq if qmodel.per_step else seq[:, -1],
                         observe=lambda name, v: int_values.setdefault((top, name), []).append(v))
    qparams = [layer.qparams for layer in qmodel.layers] + [_head_qparams(qmodel)]
    out = {}
    for (li, name), values in int_values.items():
        float_name = "h" if name == "h_new" else name
        if (li, float_name) not in float_values or float_name not in qparams[li]:
            continue
        q = qparams[li][float_name]
        if li == top:  # the head runs once, on the last step or on every step at once
            reference, got = float_values[(li, name)][0].astype(np.float64), q.dequantize(values[0])
            if reference.ndim == 2:  # [N, O]: a single step
                reference, got = reference[:, None], got[:, None]
        else:
            reference = np.stack(float_values[(li, float_name)], axis=1).astype(np.float64)
            if float_name == "x":
                reference = reference[:, 0]  # layers_forward observes a layer's whole input sequence once
            got = np.stack(values, axis=1)
            got = q.dequantize(got)
        got = np.asarray(got, np.float64)
        cap = qmodel.report.caps.get((li, float_name))
        if cap is not None:  # beyond a bound set at the activation's flat end, clipping costs nothing
            lo, hi = q.range
            reference = np.clip(reference, lo if lo > -cap * CAP_TOLERANCE else -np.inf,
                                hi if hi < cap * CAP_TOLERANCE else np.inf)
        out[_tensor_name(qmodel, li, float_name)] = _error(got - reference, q)
    return out


def _error(diff: np.ndarray, q) -> dict:
    lo, hi = q.range
    rmse = float(np.sqrt(np.mean(diff ** 2)))
    per_step = np.sqrt(np.mean(diff ** 2, axis=tuple(a for a in range(diff.ndim) if a != 1)))
    return {"rmse": rmse, "rmse_lsb": rmse / q.scale, "max_abs": float(np.max(np.abs(diff))),
            "relative": rmse / max(hi - lo, 1e-30), "per_step_lsb": (per_step / q.scale).tolist()}


def dequantized_model(qmodel) -> GRUModel:
    """The float model with every weight and bias replaced by its integer value times its scale."""
    model = qmodel.float_model
    layers = []
    for layer, ql in zip(model.layers, qmodel.layers):
        W, R = layer.forward.W.copy(), layer.forward.R.copy()
        Wb, Rb = np.zeros_like(layer.forward.Wb), np.zeros_like(layer.forward.Rb)
        for op in ql.ops:
            if op.kind != FULLY_CONNECTED:
                continue
            fc = ql.fcs[op.output]
            w = fc.w_q.astype(np.float64) * fc.w_scales[:, None]
            b = (np.zeros(w.shape[0]) if fc.bias_q is None
                 else fc.bias_q.astype(np.float64) * ql.qparams[op.inputs[0]].scale * fc.w_scales)
            (W if op.weight == "W" else R)[op.gate] = w
            if op.output.startswith("gx_"):
                Wb[op.gate] = b
            else:
                Rb[op.gate] = b
        layers.append(replace(layer, forward=GRUDirection(W=W, R=R, Wb=Wb, Rb=Rb)))
    head = model.head
    if head is not None:
        head = replace(head, layers=tuple(
            Dense(d.fc.w_q.astype(np.float64) * d.fc.w_scales[:, None],
                  np.zeros(d.fc.w_q.shape[0]) if d.fc.bias_q is None
                  else d.fc.bias_q.astype(np.float64) * d.input_q.scale * d.fc.w_scales, old.activation)
            for d, old in zip(qmodel.head.layers, head.layers)))
    return replace(model, layers=tuple(layers), head=head)


def simulate(qmodel, x: np.ndarray, in_float: tuple[tuple[int, str], ...] = (), float_weights: tuple[int, ...] = ()
             ) -> np.ndarray:
    """The fake-quantized run on x (module docstring): every tensor on its grid except the (layer, group)
    pairs in ``in_float``; the weights of the layers in ``float_weights`` (len(layers) = the head) float."""
    model, dq = qmodel.float_model, dequantized_model(qmodel)
    top = len(model.layers)
    layers = tuple(orig if li in float_weights else deq for li, (orig, deq) in enumerate(zip(model.layers, dq.layers)))
    head = model.head if top in float_weights else dq.head
    mixed = replace(model, layers=layers, head=head)
    keep = {(li, name) for li, group in in_float for name in GROUPS.get(group, ())}
    keep |= {(top, name) for li, group in in_float if li == top for name in _head_names(qmodel)}

    def fake(layer: int, name: str, value: np.ndarray) -> np.ndarray:
        if (layer, name) in keep:
            return value
        q = qmodel.layers[layer].qparams.get(name) if layer < top else _head_qparams(qmodel).get(name)
        return value if q is None else q.dequantize(q.quantize(value)).astype(np.float32)

    return output_from_states(mixed, layers_forward(mixed, x, fake=fake), fake=fake)


def _head_names(qmodel) -> list[str]:
    return list(_head_qparams(qmodel))


def _head_qparams(qmodel) -> dict:
    if qmodel.head is None:
        return {}
    out = {}
    for k, d in enumerate(qmodel.head.layers):
        out[f"head{k}_in"], out[f"head{k}_out"] = d.input_q, d.output_q
    return out


def sensitivity(qmodel, x: np.ndarray, y: np.ndarray, task: str, val_saturation: dict) -> tuple[float, list[dict]]:
    """(the simulation's metric, [{group, metric, recovered, output_error_recovered, advice}] most recovering
    first): per layer each tensor group and the weights, and the head, left in float one at a time (module
    docstring). recovered = the share of the simulation's metric drop from float that comes back;
    output_error_recovered = the share of its RMS output error against float (a finer signal than a metric
    counted in whole sequences)."""
    model = qmodel.float_model
    higher = task == "classification"
    reference = model.predict(x)
    float_score = score(task, y, reference, model)[0]
    simulated = simulate(qmodel, x)
    full = score(task, y, simulated, model)[0]
    drop = (float_score - full) if higher else (full - float_score)
    rms = lambda out: float(np.sqrt(np.mean((out.astype(np.float64) - reference) ** 2)))  # noqa: E731
    full_error = rms(simulated)
    top = len(qmodel.layers)
    candidates = [(f"layer{li} {group}", ((li, group),), ()) for li in range(top) for group in GROUPS
                  if group != "input" or li == 0]
    candidates += [(f"layer{li} weights", (), (li,)) for li in range(top)]
    if qmodel.head is not None:
        candidates += [("head tensors", ((top, "head"),), ()), ("head weights", (), (top,))]
    rows = []
    for label, in_float, float_weights in candidates:
        out = simulate(qmodel, x, in_float, float_weights)
        value = score(task, y, out, model)[0]
        gain = (value - full) if higher else (full - value)
        rows.append({"group": label, "metric": value, "recovered": gain / drop if drop > 0 else 0.0,
                     "output_error_recovered": 1.0 - rms(out) / full_error if full_error > 0 else 0.0,
                     "advice": _advice(label, qmodel, val_saturation)})
    rows.sort(key=lambda r: (-r["recovered"], -r["output_error_recovered"]))
    return full, rows


def _advice(label: str, qmodel, val_saturation: dict) -> str:
    """What to do when this group costs the metric: a clipped range wants a wider one, a fine grid 16x8."""
    if label.endswith("weights"):
        return ("its weights' 8 bits: fine-tune with the quantization in the loop, or prune this layer less"
                if qmodel.scheme.name == "int8" else "its weights' 8 bits (the same in 16x8): quantization-aware "
                "training")
    layer, _, group = label.partition(" ")
    names = GROUPS.get(group, ()) if layer != "head" else _head_names(qmodel)
    clipped = [n for n in names if val_saturation.get(n if layer == "head" else f"{layer}/{n}", {}).get("harmful")]
    if clipped:
        if group == "input":
            return "the input clips on validation data: calibrate on data that covers it, or declare --input-range"
        return (f"{', '.join(clipped)} clip on validation data: calibrate on more representative sequences "
                "(a wider range here)")
    if qmodel.scheme.name == "int8":
        return "resolution, not range: 16x8 (int16 activations) for this model"
    return "resolution at 16 bits already: this group's error is the fixed-point arithmetic itself"
