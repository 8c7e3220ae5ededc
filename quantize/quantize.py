"""``grukit.quantize(model, calib_x, scheme)``: choose every integer parameter of the GRU.

Schemes:
- ``int8``: int8 activations (asymmetric) and hidden state (symmetric), int8 symmetric per-channel weights,
  int32 biases.
- ``16x8``: int16 symmetric activations and hidden state, int8 symmetric per-channel weights, int64 biases.

Every quantized tensor of the step graph (``grukit.quantize.graph``) gets a QParams:
- the layer input of layer 0 from its observer, of layer l > 0 the state quantization of layer l - 1;
- the state ``h`` / ``h_new``: symmetric, covering the largest |h| seen in calibration (never clipped by a
  percentile or MSE observer: the state is the GRU's memory and a clipped state does not recover), capped
  at 1 because |h| <= 1 always;
- ``z``, ``r``, ``n``: fixed by TFLite-Micro's LOGISTIC and TANH output quantization;
- gate pre-activations ``z_pre``, ``r_pre``, ``n_pre``: the observer's range intersected with the interval
  where the activation is not yet saturated at its output resolution (beyond it every input gives the
  same output, so range there is wasted);
- everything else: the observer's range.

Floats live only here; the returned model holds integer weights, biases and the prepared integer
parameters of every op, and runs with ``grukit.runtime.int_gru``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from grukit.errors import BadInputError, UnsupportedModelError
from grukit.model import GRUModel
from grukit.quantize import prepare as P
from grukit.quantize.calibrate import TensorKey, calibrate, count_saturation
from grukit.quantize.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, Op, step_ops
from grukit.quantize.observers import OBSERVERS, RangeObserver
from grukit.quantize.qparams import INT_RANGE, QParams
from grukit.quantize.rounding import round_weights_to_inputs
from grukit.runtime.float_gru import split_biases
from grukit.runtime.ops_int import round_half_away

SCHEMES = {"int8": "int8", "16x8": "int16"}  # scheme -> activation dtype
BIAS_DTYPE = {"int8": np.int32, "16x8": np.int64}

# |pre-activation| beyond which the activation's output is constant at its output resolution:
# sigmoid(a) rounds to its top code once 1 - sigmoid(a) < scale / 2, i.e. a > ln(2 / scale);
# tanh(a) likewise once 1 - tanh(a) < scale / 2, i.e. a > atanh(1 - scale / 2). A margin of 1 covers the
# fixed-point approximations' own error near saturation.
def _saturation_limit(kind: str, out_scale: float) -> float:
    if kind == LOGISTIC:
        return math.log(2.0 / out_scale) + 1.0
    return math.atanh(1.0 - out_scale / 2.0) + 1.0


MIN_RANGE = 1e-6  # a tensor that is constant zero in calibration still needs a positive scale


def without_caches(obj) -> dict:
    """A frozen dataclass's pickled state without what the runtime caches on it under _names (compiled
    plans, a worker message): those are rebuilt where they are needed, never shipped."""
    return {k: v for k, v in obj.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class QuantizedFC:
    """One fully connected product: w_q int8 [O, K] symmetric per output channel, bias_q int32/int64 [O]."""

    w_q: np.ndarray
    w_scales: np.ndarray  # float32 [O]
    bias_q: np.ndarray | None


@dataclass(frozen=True)
class QuantizedLayer:
    """One quantized GRU layer: QParams of every graph tensor, the FC weights, the prepared op params."""

    linear_before_reset: int
    input_size: int
    hidden_size: int
    qparams: dict[str, QParams]
    fcs: dict[str, QuantizedFC]  # keyed by the FC op's output tensor name
    prepared: dict[str, object]  # keyed by op output tensor name

    @property
    def ops(self) -> tuple[Op, ...]:
        return step_ops(self.linear_before_reset)

    def __getstate__(self):
        return without_caches(self)


@dataclass(frozen=True)
class QuantizedHead:
    fc: QuantizedFC
    input_q: QParams
    output_q: QParams
    prepared: object
    per_step: bool
    activation: str


@dataclass(frozen=True)
class QuantizationReport:
    """What calibration saw: per tensor the observed range, the quantized range and saturation counts."""

    observer: str
    observed: dict[TensorKey, tuple[float, float]]
    quantized: dict[TensorKey, tuple[float, float]]
    saturated: dict[TensorKey, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # parameter adjustments made, in words


def _float32_at_least(x: float) -> float:
    """The smallest float32 >= x: a scale rounded to float32 must not shrink the range it was chosen for."""
    f = np.float32(x)
    return float(f if float(f) >= x else np.nextafter(f, np.float32(np.inf)))


def _qparams_from_range(lo: float, hi: float, dtype: str, symmetric: bool) -> QParams:
    """The quantization whose grid covers [lo, hi] (widened to contain 0) with the finest step."""
    qmin, qmax = INT_RANGE[dtype]
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric or dtype == "int16":
        a = max(-lo, hi, MIN_RANGE)
        return QParams(_float32_at_least(a / qmax), 0, dtype)
    if hi - lo < MIN_RANGE:
        hi = lo + MIN_RANGE
    scale = (hi - lo) / (qmax - qmin)
    zp = qmin - lo / scale
    zp = int(np.clip(round_half_away(zp), qmin, qmax))
    if hi > 0 and zp == qmax:
        zp -= 1  # hi is under half a step: keep one positive code for it
    # Rounding the zero point shifts the grid by up to half a step: widen the step so both ends stay on it.
    if hi > 0:
        scale = max(scale, hi / (qmax - zp))
    if lo < 0:
        scale = max(scale, lo / (qmin - zp))
    return QParams(_float32_at_least(scale), zp, dtype)


WEIGHT_ROUNDINGS = ("output", "nearest")
# Which calibration tensor feeds each fully connected input (for its Gram matrix).
_FC_INPUT_TENSOR = {"x": "x", "h": "h_prev", "r_h": "r_h"}


# Largest |bias| in accumulator steps a channel may take, leaving the products added to it room: int8,
# 2^28, half of the 2^29 the C kernel's fast requantization accepts (an int32 accumulator would allow 2^31);
# 16x8, 2^46, half of TFLM's 2^47 64-bit requantization bound.
BIAS_HEADROOM = {"int8": 1 << 21, "16x8": 1 << 46}


def _quantize_fc(W: np.ndarray, b: np.ndarray | None, input_q: QParams, scheme: str, gram=None,
                 where: str = "", notes: list | None = None) -> QuantizedFC:
    w_q, w_scales = P.quantize_weights_per_channel(W)
    if b is not None:
        # A channel of tiny weights with a real bias: at the weights' own scale the bias would not fit the
        # accumulator. Widen that channel's scale until it does (its weights lose nothing that matters next
        # to the bias) and record it; never saturate the bias.
        need = np.abs(np.asarray(b, np.float64)) / (float(np.float32(input_q.scale)) * BIAS_HEADROOM[scheme])
        narrow = w_scales.astype(np.float64) < need
        if narrow.any():
            widened = w_scales.copy()
            widened[narrow] = np.nextafter(need[narrow].astype(np.float32), np.float32(np.inf))
            for o in np.nonzero(narrow)[0]:
                (notes if notes is not None else []).append(
                    f"{where} channel {o}: weight scale widened {w_scales[o]:.3g} -> {widened[o]:.3g} so its "
                    f"bias {float(b[o]):.3g} fits the accumulator")
            w_scales = widened
            w_q = P.quantize_weights_with_scales(W, w_scales)
    if gram is not None:
        # Same scales; integers chosen for the inputs this product really sees (quantize/rounding.py).
        w_q = round_weights_to_inputs(W, w_scales, gram)
    bias_q = None if b is None else P.quantize_bias(b, input_q.scale, w_scales, BIAS_DTYPE[scheme])
    return QuantizedFC(w_q=w_q, w_scales=w_scales, bias_q=bias_q)


def _prepare(op: Op, qp: dict[str, QParams], fc: QuantizedFC | None):
    ins = [qp[name] for name in op.inputs]
    out = qp[op.output]
    if op.kind == FULLY_CONNECTED:
        return P.prepare_fully_connected(ins[0], fc.w_scales, out)
    if op.kind == ADD:
        return P.prepare_add(ins[0], ins[1], out)
    if op.kind == SUB:
        return P.prepare_sub(ins[0], ins[1], out)
    if op.kind == MUL:
        return P.prepare_mul(ins[0], ins[1], out)
    if op.kind == LOGISTIC:
        return P.prepare_logistic(ins[0], out)
    if op.kind == TANH:
        return P.prepare_tanh(ins[0], out)
    raise AssertionError(f"unknown op kind {op.kind}")


def quantize_model(
    model: GRUModel,
    calib_x: np.ndarray,
    scheme: str = "int8",
    observer: str = "minmax",
    observers: dict[TensorKey, RangeObserver] | None = None,
    progress=None,
    weight_rounding: str = "output",
):
    """Calibrate on calib_x [N, T, I] and return a QuantizedGRUModel (see grukit.runtime.int_gru).

    observer: how activation ranges are chosen (minmax, percentile, mse; the state always uses minmax).
    weight_rounding: "output" rounds each weight matrix to minimise its product's error on the calibration
    inputs (quantize/rounding.py); "nearest" rounds every weight to its nearest integer.
    """
    from grukit.runtime.int_gru import QuantizedGRUModel

    if scheme not in SCHEMES:
        raise BadInputError(f"unknown scheme {scheme!r}; use one of {tuple(SCHEMES)}")
    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise BadInputError(f"unknown weight rounding {weight_rounding!r}; use one of {WEIGHT_ROUNDINGS}")
    if observer not in OBSERVERS:
        raise BadInputError(f"unknown observer {observer!r}; use one of {OBSERVERS}")
    if model.bidirectional:
        raise UnsupportedModelError(
            "bidirectional GRU layers cannot be quantized: a streaming device sees each sample once"
        )
    act = SCHEMES[scheme]
    if observers is None:
        observers = calibrate(model, calib_x, progress)
    levels = INT_RANGE[act][1] - INT_RANGE[act][0]
    observed = {key: (obs.min, obs.max) for key, obs in observers.items()}
    quantized: dict[TensorKey, tuple[float, float]] = {}

    def gram(layer: int, name: str):
        if weight_rounding == "nearest":
            return None
        return observers[(layer, name)].gram

    notes: list[str] = []
    layers = []
    prev_state_q = None
    for li, layer in enumerate(model.layers):
        d = layer.forward
        qp: dict[str, QParams] = {}

        def chosen(name: str, symmetric: bool = False, cap: float | None = None, obs_name=None) -> QParams:
            obs = observers[(li, obs_name or name)]
            lo, hi = obs.range(observer, levels, symmetric)
            if cap is not None:
                lo, hi = max(lo, -cap), min(hi, cap)
            q = _qparams_from_range(lo, hi, act, symmetric)
            quantized[(li, obs_name or name)] = q.range
            return q

        if li == 0:
            qp["x"] = chosen("x")
        else:
            qp["x"] = prev_state_q
        # The state: exact max |h| (minmax, whatever the observer), capped at 1.
        h_obs = observers[(li, "h")]
        h_amax = min(max(-h_obs.min, h_obs.max, MIN_RANGE), 1.0)
        qp["h"] = qp["h_new"] = QParams(_float32_at_least(h_amax / INT_RANGE[act][1]), 0, act)
        quantized[(li, "h")] = qp["h"].range
        qp["z"] = qp["r"] = P.logistic_output_qparams(act)
        qp["n"] = P.tanh_output_qparams(act)
        caps = {
            "z_pre": _saturation_limit(LOGISTIC, qp["z"].scale),
            "r_pre": _saturation_limit(LOGISTIC, qp["r"].scale),
            "n_pre": _saturation_limit(TANH, qp["n"].scale),
        }
        ops = step_ops(layer.linear_before_reset)
        for op in ops:
            if op.output not in qp:
                qp[op.output] = chosen(op.output, cap=caps.get(op.output))

        bx, bh = split_biases(d, layer.linear_before_reset)
        biases = {"bx": bx, "bh": bh}
        fcs, prepared = {}, {}
        for op in ops:
            fc = None
            if op.kind == FULLY_CONNECTED:
                W = (d.W if op.weight == "W" else d.R)[op.gate]
                b = None if op.bias is None else biases[op.bias][op.gate]
                fc = fcs[op.output] = _quantize_fc(W, b, qp[op.inputs[0]], scheme,
                                                   gram(li, _FC_INPUT_TENSOR[op.inputs[0]]),
                                                   f"layer {li} {op.output}", notes)
            prepared[op.output] = _prepare(op, qp, fc)
        layers.append(
            QuantizedLayer(layer.linear_before_reset, layer.input_size, layer.hidden_size, qp, fcs, prepared)
        )
        prev_state_q = qp["h"]

    head = None
    if model.head is not None:
        hk = (len(model.layers), "head_out")
        lo, hi = observers[hk].range(observer, levels, False)
        out_q = _qparams_from_range(lo, hi, act, False)
        quantized[hk] = out_q.range
        fc = _quantize_fc(model.head.W, model.head.b, prev_state_q, scheme, gram(len(model.layers), "head_in"),
                          "head", notes)
        head = QuantizedHead(
            fc=fc, input_q=prev_state_q, output_q=out_q,
            prepared=P.prepare_fully_connected(prev_state_q, fc.w_scales, out_q),
            per_step=model.head.per_step, activation=model.head.activation,
        )

    report = QuantizationReport(observer=observer, observed=observed, quantized=quantized, notes=notes)
    report.saturated.update(count_saturation(model, calib_x, quantized))
    return QuantizedGRUModel(scheme=scheme, layers=tuple(layers), head=head, float_model=model, report=report)

