"""``grukit.quantize(model, calib_x, scheme)``: choose every integer parameter of the GRU.

Schemes (``grukit.core.scheme``): ``int8`` (int8 activations, asymmetric, and state, symmetric; int8
symmetric per-channel weights; int32 biases) and ``16x8`` (int16 symmetric activations and state, int8
weights, int64 biases).

Every quantized tensor of the step graph (``grukit.core.graph``) gets a QParams:
- the layer input of layer 0 from its observer, of layer l > 0 the state quantization of layer l - 1;
- the state ``h`` / ``h_new``: symmetric, covering the largest |h| seen in calibration (never clipped by a
  percentile or MSE observer: the state is the GRU's memory and a clipped state does not recover), capped
  at 1 because |h| <= 1 always;
- ``z``, ``r``, ``n``: fixed by TFLite-Micro's LOGISTIC and TANH output quantization;
- gate pre-activations ``z_pre``, ``r_pre``, ``n_pre``: the observer's range intersected with the interval
  where the activation is not yet saturated at its output resolution (beyond it every input gives the
  same output, so range there is wasted);
- everything else: the observer's range.

Floats live only here and in ``prepare``; the returned ``grukit.core.quantized.QuantizedGRUModel`` holds
integer weights, biases and the prepared integer parameters of every op.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.fixedpoint import round_half_away
from grukit.core.graph import FULLY_CONNECTED, LOGISTIC, TANH, split_biases, step_ops
from grukit.core.model import GRULayer, GRUModel
from grukit.core.qparams import INT_RANGE, QParams
from grukit.core.float_gru import FUSED_ACTIVATIONS, as_batch
from grukit.core.quantized import (QuantizationReport, QuantizedDense, QuantizedFC, QuantizedGRUModel,
                                   QuantizedHead, QuantizedLayer, TensorKey)
from grukit.core.scheme import INT8, S16X8, Scheme, scheme_named
from grukit.quantize import prepare as P
from grukit.quantize.calibrate import calibrate, count_saturation
from grukit.quantize.observers import OBSERVERS, RangeObserver
from grukit.quantize.rounding import round_weights_to_inputs

# |pre-activation| beyond which the activation's output is constant at its output resolution:
# sigmoid(a) rounds to its top code once 1 - sigmoid(a) < scale / 2, i.e. a > ln(2 / scale);
# tanh(a) likewise once 1 - tanh(a) < scale / 2, i.e. a > atanh(1 - scale / 2). A margin of 1 covers the
# fixed-point approximations' own error near saturation.
def _saturation_limit(kind: str, out_scale: float) -> float:
    if kind == LOGISTIC:
        return math.log(2.0 / out_scale) + 1.0
    return math.atanh(1.0 - out_scale / 2.0) + 1.0


MIN_RANGE = 1e-6  # a tensor that is constant zero in calibration still needs a positive scale


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
    if lo < 0 and zp == qmin:
        zp += 1  # lo is under half a step: keep one negative code for it
    # Rounding the zero point shifts the grid by up to half a step: widen the step so both ends stay on it.
    if hi > 0:
        scale = max(scale, hi / (qmax - zp))
    if lo < 0:
        scale = max(scale, lo / (qmin - zp))
    return QParams(_float32_at_least(scale), zp, dtype)


WEIGHT_ROUNDINGS = ("output", "nearest")
# Which calibration tensor feeds each fully connected input (for its Gram matrix).
_FC_INPUT_TENSOR = {"x": "x", "h": "h_prev", "r_h": "r_h"}


# Largest |bias| in accumulator steps a channel may take, leaving the products added to it room: int8, 2^21,
# half of the 2^22 the C kernel's packed products allow (256 x 2 x (|bias| + |x - zp| sum |w|) below 2^31;
# an int32 accumulator alone would allow 2^31); 16x8, 2^46, half of TFLM's 2^47 64-bit requantization bound.
BIAS_HEADROOM = {INT8: 1 << 21, S16X8: 1 << 46}


def _quantize_fc(W: np.ndarray, b: np.ndarray | None, input_q: QParams, output_q: QParams, scheme: Scheme,
                 gram=None, where: str = "", notes: list | None = None) -> QuantizedFC:
    w_q, w_scales = P.quantize_weights_per_channel(W)
    # A channel whose weights are all zero (pruned, or a gate a model does not use) is its bias alone: any
    # scale represents its weights, so take the one whose output multiplier is 1 (the bias then on the
    # output's own grid). prepare's 1.0 would ask for input_scale / output_scale, which for an output whose
    # range is the bias's few steps can be beyond the requantization's range (16x8: a left shift over 7).
    dead = ~np.any(np.asarray(W) != 0, axis=1) if W.shape[1] else np.ones(W.shape[0], bool)
    if dead.any():
        w_scales = np.where(dead, np.float32(float(output_q.scale) / float(input_q.scale)), w_scales)
        w_scales = w_scales.astype(np.float32)
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
    bias_q = None if b is None else P.quantize_bias(b, input_q.scale, w_scales, scheme.bias_dtype)
    return QuantizedFC(w_q=w_q, w_scales=w_scales, bias_q=bias_q)


class _Ranges:
    """Chooses each tensor's QParams from its observer and records the observed and quantized ranges."""

    def __init__(self, observers: dict[TensorKey, RangeObserver], observer: str, scheme: Scheme,
                 kinds: dict[TensorKey, str] | None = None):
        self.observers, self.observer, self.dtype = observers, observer, scheme.activation
        self.kinds = kinds or {}  # per tensor, an observer other than ``observer``
        self.levels = INT_RANGE[self.dtype][1] - INT_RANGE[self.dtype][0]
        self.observed = {key: (obs.min, obs.max) for key, obs in observers.items()}
        self.quantized: dict[TensorKey, tuple[float, float]] = {}
        self.caps: dict[TensorKey, float] = {}
        self.declared: dict[TensorKey, tuple[float, float]] = {}  # ranges given, not observed
        self.choosable: list[TensorKey] = []  # tensors whose range an observer chose, in graph order

    def chosen(self, key: TensorKey, symmetric: bool = False, cap: float | None = None) -> QParams:
        """From the observer's proposed range (or the declared one), capped at +-cap."""
        if key in self.declared:
            return self.record(key, _qparams_from_range(*self.declared[key], self.dtype, symmetric))
        self.choosable.append(key)
        lo, hi = self.observers[key].range(self.kinds.get(key, self.observer), self.levels, symmetric)
        if cap is not None:
            lo, hi = max(lo, -cap), min(hi, cap)
            self.caps[key] = cap
        return self.record(key, _qparams_from_range(lo, hi, self.dtype, symmetric))

    def state(self, key: TensorKey) -> QParams:
        """The state: symmetric over the exact max |h| (minmax, whatever the observer), capped at 1."""
        obs = self.observers[key]
        amax = min(max(-obs.min, obs.max, MIN_RANGE), 1.0)
        return self.record(key, QParams(_float32_at_least(amax / INT_RANGE[self.dtype][1]), 0, self.dtype))

    def record(self, key: TensorKey, q: QParams) -> QParams:
        self.quantized[key] = q.range
        return q


def _layer_qparams(li: int, layer: GRULayer, input_q: QParams | None, ranges: _Ranges) -> dict[str, QParams]:
    """The QParams of every tensor of one layer's step graph (module docstring)."""
    qp = {"x": ranges.chosen((li, "x")) if input_q is None else input_q}
    qp["h"] = qp["h_new"] = ranges.state((li, "h"))
    qp["z"] = qp["r"] = P.logistic_output_qparams(ranges.dtype)
    qp["n"] = P.tanh_output_qparams(ranges.dtype)
    caps = {"z_pre": _saturation_limit(LOGISTIC, qp["z"].scale), "r_pre": _saturation_limit(LOGISTIC, qp["r"].scale),
            "n_pre": _saturation_limit(TANH, qp["n"].scale)}
    for op in step_ops(layer.linear_before_reset):
        if op.output not in qp:
            qp[op.output] = ranges.chosen((li, op.output), cap=caps.get(op.output))
    return qp


def _quantize_layer(li: int, layer: GRULayer, input_q: QParams | None, ranges: _Ranges, scheme: Scheme, grams,
                    notes: list[str]) -> QuantizedLayer:
    """Weights, biases and every op's prepared parameters of one layer."""
    d = layer.forward
    qp = _layer_qparams(li, layer, input_q, ranges)
    bx, bh = split_biases(d, layer.linear_before_reset)
    biases = {"bx": bx, "bh": bh}
    fcs, prepared = {}, {}
    for op in step_ops(layer.linear_before_reset):
        fc = None
        if op.kind == FULLY_CONNECTED:
            W = (d.W if op.weight == "W" else d.R)[op.gate]
            b = None if op.bias is None else biases[op.bias][op.gate]
            fc = fcs[op.output] = _quantize_fc(W, b, qp[op.inputs[0]], qp[op.output], scheme,
                                               grams((li, _FC_INPUT_TENSOR[op.inputs[0]])),
                                               f"layer {li} {op.output}", notes)
        prepared[op.output] = P.prepare_op(op, qp, fc)
    return QuantizedLayer(layer.linear_before_reset, layer.input_size, layer.hidden_size, qp, fcs, prepared)


def _quantize_head(model: GRUModel, input_q: QParams, ranges: _Ranges, scheme: Scheme, grams,
                   notes: list[str]) -> QuantizedHead:
    """Each dense layer's FULLY_CONNECTED (a ReLU / ReLU6 before the last layer fused as its output clamp, a
    tanh / sigmoid there a TANH / LOGISTIC op after it); the last layer's activation stays in float."""
    top, last = len(model.layers), len(model.head.layers) - 1
    layers: list[QuantizedDense] = []
    for k, d in enumerate(model.head.layers):
        op = {"tanh": TANH, "sigmoid": LOGISTIC}.get(d.activation) if k < last else None
        out_q = ranges.chosen((top, f"head{k}_out"), cap=None if op is None else _saturation_limit(
            op, (P.tanh_output_qparams if op == TANH else P.logistic_output_qparams)(ranges.dtype).scale))
        where = "head" if last == 0 else f"head layer {k}"
        fc = _quantize_fc(d.W, d.b, input_q, out_q, scheme, grams((top, f"head{k}_in")), where, notes)
        fused = d.activation if k < last and d.activation in FUSED_ACTIVATIONS else "linear"
        layer = QuantizedDense(fc=fc, input_q=input_q, output_q=out_q, activation=d.activation,
                               prepared=P.prepare_fully_connected(input_q, fc.w_scales, out_q, fused))
        if op is not None:
            act_q = (P.tanh_output_qparams if op == TANH else P.logistic_output_qparams)(ranges.dtype)
            act_prepared = (P.prepare_tanh if op == TANH else P.prepare_logistic)(out_q, act_q)
            layer = replace(layer, act_op=op, act_q=act_q, act_prepared=act_prepared)
        layers.append(layer)
        input_q = layer.result_q
    return QuantizedHead(layers=tuple(layers), per_step=model.head.per_step, activation=model.head.activation)


AUTO, MINMAX = "auto", "minmax"
OBSERVER_CHOICES = (*OBSERVERS, AUTO)
AUTO_HELD_OUT = 4  # every 4th calibration sequence is held out to judge the auto observer's choices
AUTO_MIN_SEQUENCES = 8  # fewer calibration sequences than this: auto is min/max (nothing to hold out)
AUTO_MIN_GAIN = 0.1  # a choice must lower the held-out output error by this share (10%) to be taken


def choose_observers(model: GRUModel, calib_x: np.ndarray, scheme: Scheme, weight_rounding: str = "output",
                     input_range=None, span_calibration: bool = True) -> dict[TensorKey, str]:
    """The ``auto`` observer: per tensor, min/max, percentile or MSE, whichever gives the integer model the
    smallest output error against the float model on held-out calibration sequences (every AUTO_HELD_OUT-th;
    calibrated on the others). Greedy, tensor by tensor in graph order from all-min/max, a choice kept only
    when it lowers the error by AUTO_MIN_GAIN: no labels, and never the validation data. {} (min/max
    everywhere) with fewer than AUTO_MIN_SEQUENCES sequences."""
    x = as_batch(calib_x, model.input_size)
    if x.shape[0] < AUTO_MIN_SEQUENCES:
        return {}
    held = np.arange(x.shape[0]) % AUTO_HELD_OUT == AUTO_HELD_OUT - 1
    fit, test = x[~held], x[held]
    if input_range is not None and span_calibration:  # spanned once here, not in every trial below
        fit = np.concatenate([fit, span_inputs(fit, *_input_range(input_range, model.input_size))])
    reference = model.predict(test).astype(np.float64)
    observers = calibrate(model, fit)

    def error(kinds: dict[TensorKey, str]) -> tuple[float, QuantizedGRUModel]:
        q = quantize_model(model, fit, scheme, MINMAX, observers=observers, weight_rounding=weight_rounding,
                           observer_kinds=kinds, input_range=input_range, span_calibration=False,
                           count_saturated=False)
        return float(np.mean((q.predict(test, workers=1) - reference) ** 2)), q

    best, q = error({})
    kinds: dict[TensorKey, str] = {}
    levels = INT_RANGE[scheme.activation][1] - INT_RANGE[scheme.activation][0]
    for key in q.report.choosable:
        base = q.report.quantized[key]
        for kind in OBSERVERS:
            if kind == MINMAX:
                continue
            lo, hi = observers[key].range(kind, levels, False)
            if abs(lo - base[0]) + abs(hi - base[1]) < 1e-3 * (base[1] - base[0]):
                continue  # the same range: nothing to try
            e, _ = error({**kinds, key: kind})
            if e < best * (1 - AUTO_MIN_GAIN):
                best, kinds[key] = e, kind
    return kinds


def _input_range(input_range, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo [I], hi [I]) from (lo, hi), each a number or one per input channel; checked."""
    try:
        lo, hi = (np.broadcast_to(np.asarray(v, np.float64), (input_size,)).copy() for v in input_range)
    except (TypeError, ValueError):
        raise BadInputError(f"an input range is (lo, hi), each a number or {input_size} numbers (one per input "
                            f"channel); got {input_range!r}") from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(hi <= lo):
        raise BadInputError(f"an input range needs finite lo < hi on every channel; got lo {lo.tolist()}, "
                            f"hi {hi.tolist()}")
    return lo, hi


def span_inputs(calib_x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """calib_x [N, T, I] mapped per channel, affinely, from its own [min, max] onto [lo, hi]: sequences shaped
    like the calibration data at the declared range's extent. A channel constant in calib_x is set to the
    middle of its range."""
    x = np.asarray(calib_x, np.float64)
    x_lo, x_hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    width = x_hi - x_lo
    scale = np.where(width > 0, (hi - lo) / np.where(width > 0, width, 1.0), 0.0)
    mid = np.where(width > 0, lo, (lo + hi) / 2)
    return (mid + (x - x_lo) * scale).astype(np.float32)


def quantize_model(
    model: GRUModel,
    calib_x: np.ndarray,
    scheme: str | Scheme = "int8",
    observer: str = "minmax",
    observers: dict[TensorKey, RangeObserver] | None = None,
    progress=None,
    weight_rounding: str = "output",
    input_range: tuple | None = None,
    span_calibration: bool = True,
    observer_kinds: dict[TensorKey, str] | None = None,
    count_saturated: bool = True,
) -> QuantizedGRUModel:
    """Calibrate on calib_x [N, T, I] and return the QuantizedGRUModel.

    observer: how activation ranges are chosen (minmax, percentile, mse; the state always uses minmax), or
    "auto": per tensor the one whose integer model is closest to float on held-out calibration sequences
    (``choose_observers``). observer_kinds: per tensor, an observer other than ``observer``.
    count_saturated: count the calibration values outside each range for the report (a float run over
    calib_x; the auto observer's trials skip it).
    observers: calibration already run on calib_x (``calibrate``), to skip running it again.
    weight_rounding: "output" rounds each weight matrix to minimise its product's error on the calibration
    inputs (quantize/rounding.py); "nearest" rounds every weight to its nearest integer.
    input_range: (lo, hi), numbers or one per input channel: the input's range as the sensor specifies it,
    instead of the calibration data's. The input tensor is quantized over [min lo, max hi] (one scale per
    tensor, as TFLite has it), and the other tensors are calibrated on calib_x plus a copy of it mapped per
    channel onto [lo, hi] (``span_inputs``), so they too cover what such inputs do to the model;
    span_calibration=False calibrates them on calib_x alone (only the input's range is declared).
    """
    scheme = scheme_named(scheme)
    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise BadInputError(f"unknown weight rounding {weight_rounding!r}; use one of {WEIGHT_ROUNDINGS}")
    if observer not in OBSERVER_CHOICES:
        raise BadInputError(f"unknown observer {observer!r}; use one of {', '.join(OBSERVER_CHOICES)}")
    if model.bidirectional:
        raise UnsupportedModelError(
            "bidirectional GRU layers cannot be quantized: a streaming device sees each sample once")
    declared = None
    if input_range is not None:
        lo, hi = _input_range(input_range, model.input_size)
        declared = (float(lo.min()), float(hi.max()))
        if span_calibration:
            calib_x = np.concatenate([as_batch(calib_x, model.input_size), span_inputs(calib_x, lo, hi)])
            observers = None  # calibration has to see the spanned sequences too
    if observer == AUTO:
        observer_kinds = choose_observers(model, calib_x, scheme, weight_rounding, input_range=input_range,
                                          span_calibration=span_calibration)
    if observers is None:
        observers = calibrate(model, calib_x, progress)
    ranges = _Ranges(observers, MINMAX if observer == AUTO else observer, scheme, observer_kinds)
    if declared is not None:
        ranges.declared[(0, "x")] = declared
    grams = lambda key: None if weight_rounding == "nearest" else observers[key].gram  # noqa: E731
    notes: list[str] = []
    layers: list[QuantizedLayer] = []
    for li, layer in enumerate(model.layers):
        layers.append(_quantize_layer(li, layer, layers[-1].qparams["h"] if layers else None, ranges, scheme,
                                      grams, notes))
    head = None if model.head is None else _quantize_head(model, layers[-1].qparams["h"], ranges, scheme, grams,
                                                          notes)
    report = QuantizationReport(observer=observer, observed=ranges.observed, quantized=ranges.quantized,
                                notes=notes, caps=ranges.caps, observer_kinds=dict(observer_kinds or {}),
                                choosable=tuple(ranges.choosable))
    if count_saturated:
        report.saturated.update(count_saturation(model, calib_x, ranges.quantized))
    return QuantizedGRUModel(scheme=scheme, layers=tuple(layers), head=head, float_model=model, report=report)
