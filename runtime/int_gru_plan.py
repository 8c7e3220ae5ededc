"""A compiled plan of one quantized layer: the same integers as the op-by-op walk, in far fewer NumPy calls.

The op-by-op walk (``int_gru_reference.run_op`` over ``grukit.core.graph.step_ops``) is the specification; this plan is
how the runtime runs it fast enough for whole validation sets. Each transformation keeps every integer:

- FULLY_CONNECTED ops reading the same tensor become one matmul over the stacked weight rows, with the
  per-channel requantization applied column by column (it is per channel already).
- int8 elementwise ops: an op's output depends only on its int8 inputs, so it is a table over all 256 (unary)
  or 65,536 (binary) input values, filled by running the specification kernel itself on every input. A unary
  op (LOGISTIC, TANH) whose input is consumed only by it is folded into the table of the op producing it.
- int8 tensors are held as uint16 codes, (v + 128) << s with s = 0 ("low") or 8 ("high"), chosen per tensor
  so that every binary op reads one high and one low operand: its table index is then one addition, and
  each table stores its result already coded for its consumers. Codes are decoded only at the layer's edge.
- int16 ADD / SUB: each input's rescaled term depends only on that input: a 65,536-entry table, or a shift
  for the input of the larger scale (rescaled by exactly 1/2), then the output rescale of their sum or
  difference (the kernel's own arithmetic). The terms of input-side operands are computed ahead, with the
  input-side products (``LayerPlan.hold``). int16 LOGISTIC / TANH: one 65,536-entry table each, read by the
  ADD / SUB feeding it when that is its only input's only consumer. int16 MUL: the kernel's arithmetic with
  the bounded requantization. These three run as compiled loops (``int16_loops``), as does the 16x8
  FULLY_CONNECTED output stage.
- Requantization in float64 where it is provably exact (``FloatRequant``), in int64 otherwise.

``tests/test_int_gru.py`` checks the plan against the op-by-op walk, element for element.
"""

from __future__ import annotations

import numpy as np

from grukit.core.errors import UnsupportedModelError
from grukit.core.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, Op
from grukit.runtime import int16_loops as L
from grukit.core import ops_int as K
from grukit.core import fixedpoint as F

UNARY = (LOGISTIC, TANH)
BINARY = (ADD, SUB, MUL)
_UNARY_KERNELS = {(LOGISTIC, "int8"): K.logistic_s8, (TANH, "int8"): K.tanh_s8,
                  (LOGISTIC, "int16"): K.logistic_s16, (TANH, "int16"): K.tanh_s16}
_BINARY_KERNELS = {(ADD, "int8"): K.add_s8, (SUB, "int8"): K.sub_s8, (MUL, "int8"): K.mul_s8,
                   (ADD, "int16"): K.add_s16, (SUB, "int16"): K.sub_s16, (MUL, "int16"): K.mul_s16}
_UINT = {"int8": np.uint8, "int16": np.uint16}
INT_MIN = {"int8": -128, "int16": -32768}
LOW, HIGH = 0, 8  # the shift s of an int8 tensor's uint16 code (v + 128) << s


def _all_values(dtype: str) -> np.ndarray:
    """Every value of the type, ordered by its unsigned bit pattern (so x.view(uint) indexes the table)."""
    u = _UINT[dtype]
    return np.arange(np.iinfo(u).max + 1, dtype=np.int64).astype(u).view(np.dtype(dtype))


def encode_s8(v: np.ndarray, shift: int) -> np.ndarray:
    """int8 values -> uint16 codes (v + 128) << shift."""
    return (v.view(np.uint8) ^ 0x80).astype(np.uint16) << shift


def decode_s8(code: np.ndarray, shift: int) -> np.ndarray:
    """uint16 codes (v + 128) << shift -> int8 values."""
    return ((code >> shift).astype(np.uint8) ^ 0x80).view(np.int8)


def int8_encodings(ops: tuple[Op, ...]) -> dict[str, int]:
    """The code shift (LOW or HIGH) of every int8 tensor of a layer step, ``h_new`` sharing ``h``'s.

    Each binary op needs one HIGH and one LOW operand: a two-colouring of the graph whose edges join the
    operands of each binary op. Each connected part has two colourings; the one chosen shifts the fewest
    FULLY_CONNECTED outputs (a HIGH code costs those one extra pass; table outputs are coded for free),
    counting a per-step output above an input-side one (those are coded once for a block of steps).
    """
    same = lambda name: "h" if name == "h_new" else name
    neighbours: dict[str, set[str]] = {}
    for op in ops:
        for name in (*op.inputs, op.output):
            if name != "x":  # the layer input stays plain int8: only FULLY_CONNECTED ops read it
                neighbours.setdefault(same(name), set())
        if op.kind in BINARY:
            a, b = (same(n) for n in op.inputs)
            if a == b or "x" in (a, b):
                raise UnsupportedModelError(f"{op.output}: no table coding for a binary op on {op.inputs}")
            neighbours[a].add(b)
            neighbours[b].add(a)
    cost = {same(op.output): (1 if op.inputs == ("x",) else 4) for op in ops if op.kind == FULLY_CONNECTED}
    shifts: dict[str, int] = {}
    for root in neighbours:
        if root in shifts:
            continue
        part = {root: 0}
        queue = [root]
        while queue:
            name = queue.pop()
            for other in neighbours[name]:
                if other not in part:
                    part[other] = 1 - part[name]
                    queue.append(other)
                elif part[other] == part[name]:
                    raise UnsupportedModelError(f"no table coding for the step graph: {name} and {other} "
                                                "must be coded both alike and apart")
        # colour 1 -> HIGH, or the flipped assignment, whichever shifts fewer FC outputs
        high_if_1 = sum(cost.get(n, 0) for n, c in part.items() if c == 1)
        high_if_0 = sum(cost.get(n, 0) for n, c in part.items() if c == 0)
        high_colour = 1 if high_if_1 <= high_if_0 else 0
        shifts.update({n: HIGH if c == high_colour else LOW for n, c in part.items()})
    shifts["h_new"] = shifts["h"]
    return shifts


def requantize_bounded(acc_i64: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """MultiplyByQuantizedMultiplier (int32, double rounding) for accumulators known not to overflow.

    Precondition, proved by the caller when the plan is built: |acc << max(shift, 0)| < 2^31, so the
    left shift does not wrap and the doubling high mul cannot meet its one saturating case (INT32_MIN
    squared; multipliers are positive). Then SaturatingRoundingDoublingHighMul is floor((a m + 2^30) / 2^31)
    and RoundingDivideByPOT by e > 0 is floor((t + 2^(e-1) - [t < 0]) / 2^e): half away from zero.
    """
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    t = ((acc_i64 << left) * multiplier + (1 << 30)) >> 31
    half = (np.int64(1) << right) >> 1
    return (t + half - ((t < 0) & (right > 0))) >> right


class _RowConstants:
    """Per-column constants broadcast to whole [rows, C] blocks, made once per row count.

    Elementwise passes against a contiguous [rows, C] operand run about twice as fast as against one
    broadcast row (measured: the inner loop is then the whole block, not one row)."""

    KEEP = 2  # row counts kept (the batch and the input-side block; a new batch size replaces them)

    def __init__(self, *columns: np.ndarray):
        self.columns = columns
        self.blocks: dict[int, tuple[np.ndarray, ...]] = {}

    def __call__(self, rows: int) -> tuple[np.ndarray, ...]:
        block = self.blocks.get(rows)
        if block is None:
            if len(self.blocks) >= self.KEEP:
                self.blocks.clear()
            block = self.blocks[rows] = tuple(np.ascontiguousarray(np.broadcast_to(c, (rows, len(c))))
                                              for c in self.columns)
        return block


class FloatRequant:
    """An int8 FULLY_CONNECTED's output stage, per column, in float64, exactly:
    clamp(MultiplyByQuantizedMultiplier(acc + bias, m, shift) + zp) for integer products acc = x . w.

    With a = (acc + bias) << max(shift, 0) and r = max(-shift, 0), TFLite computes
        t = floor((a m + 2^30) / 2^31)                      (SaturatingRoundingDoublingHighMul)
        y = t                                   if r = 0
        y = floor((t + 2^(r-1) - [t < 0]) / 2^r)            (RoundingDivideByPOT, ties away from 0)
    and since floor((floor(u) + c) / n) = floor((u + c) / n) for integers c and n > 0, both roundings are
    one:  y = floor(a m / 2^(31+r) + c),  c = (2^30 + 2^31 (2^(r-1) - [t < 0])) / 2^(31+r),  where t < 0
    exactly when a m < -2^30. Every term is a multiple of 2^-(31+r). So with S = (m << left) / 2^(31+r):
        y = floor(acc S + B - [t < 0] 2^-r),   B = bias S + c[t >= 0] (+ zp when that stays exact),
        t < 0  <=>  acc S < -2^30 / 2^(31+r) - bias S.
    While |a m| < 2^52 for every reachable accumulator (checked per column when the plan is built) the
    product, the sum and the floor are exact in float64 (53-bit mantissa); the output zero point is added
    inside B only where |a m| + (|zp| + 2) 2^(31+r) < 2^53 keeps that true.
    """

    EXACT_BOUND = 1 << 52

    def __init__(self, multiplier, shift, bias, zero_point, max_abs_acc, qmin: int, qmax: int):
        left = np.maximum(shift, 0)
        right = np.maximum(-shift, 0)
        denom = np.ldexp(1.0, -(31 + right))
        scale = (multiplier << left).astype(np.float64) * denom  # exact: m << left < 2^38
        bias_scaled = bias.astype(np.float64) * scale  # exact: |bias m << left| < 2^52 (checked)
        half = np.where(right > 0, np.ldexp(1.0, right - 1), 0.0)
        c_positive = (np.ldexp(1.0, 30) + np.ldexp(1.0, 31) * half) * denom
        negative_step = np.where(right > 0, np.ldexp(1.0, 31) * denom, 0.0)
        negative_below = -np.ldexp(1.0, 30) * denom - bias_scaled
        grid = [1 << (31 + int(r)) for r in right]
        wide = [int(a) << int(lf) for a, lf in zip(max_abs_acc, left)]
        zp_room = int(np.abs(zero_point).max()) + 2
        self.zero_point_folded = all(a * int(m) + zp_room * g < (1 << 53)
                                     for a, m, g in zip(wide, multiplier, grid))
        self.zero_point = zero_point.astype(np.float64)
        b_positive = bias_scaled + c_positive + (self.zero_point if self.zero_point_folded else 0.0)
        self.constants = _RowConstants(scale, negative_below, negative_step, b_positive)
        self.qmin, self.qmax = qmin, qmax

    @staticmethod
    def exact_for(max_abs_acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> bool:
        wide = [int(a) << int(max(s, 0)) for a, s in zip(max_abs_acc, shift)]
        return all(a < (1 << 31) and a * int(m) < FloatRequant.EXACT_BOUND for a, m in zip(wide, multiplier))

    def _unclamped(self, acc: np.ndarray) -> np.ndarray:
        """The argument of the floor (plus zp if folded), float64; acc [..., rows, C]."""
        scale, negative_below, negative_step, b_positive = self.constants(acc.shape[-2])
        v = acc * scale  # a float32 acc widens exactly
        correction = (v < negative_below) * negative_step  # measured faster than np.where here
        v += b_positive
        v -= correction
        if not self.zero_point_folded:
            np.floor(v, out=v)
            v += self.zero_point
        return v

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        """acc: the integer products x . w (float32 or float64 holding integers) -> clamped outputs, float64."""
        v = self._unclamped(acc)
        np.floor(v, out=v)
        return np.clip(v, self.qmin, self.qmax, out=v)

    def to_uint16(self, acc: np.ndarray) -> np.ndarray:
        """The same outputs as uint16, for a range qmin >= 0: clamping first to integer bounds, the cast's
        truncation is the floor (the values are not negative)."""
        if self.qmin < 0:
            raise ValueError(f"to_uint16 needs a range of codes (qmin >= 0), not [{self.qmin}, {self.qmax}]")
        v = self._unclamped(acc)
        return np.clip(v, self.qmin, self.qmax, out=v).astype(np.uint16)


class _Float64Requant:
    """16x8: clamp(TFLite's 64-bit MultiplyByQuantizedMultiplier(acc + bias) + zp), exactly, in float64.

    (a r + 2^(s-1)) >> s = floor(a r / 2^s + 1/2) with a = acc + bias and r the 16-bit rounded multiplier;
    exact while |a r| < 2^52 (checked when the plan is built), the bias folded in as bias r / 2^s. Runs as
    one compiled loop (``int16_loops.requantize_fc_s16``) writing each stacked op's int16 output apart."""

    def __init__(self, reduced: np.ndarray, total_shift: np.ndarray, bias, zero_point, qmin: int, qmax: int):
        scale = reduced.astype(np.float64) * np.ldexp(1.0, -total_shift)
        offset = bias.astype(np.float64) * scale + 0.5
        self.columns = (scale, offset, zero_point.astype(np.float64))
        self.qmin, self.qmax = qmin, qmax

    def __call__(self, acc: np.ndarray, out: np.ndarray) -> np.ndarray:
        """acc: float64 [rows, blocks x width] products -> out: int16 [blocks, rows, width]."""
        return L.requantize_fc_s16(acc, *self.columns, self.qmin, self.qmax, out)


class FCGroup:
    """FULLY_CONNECTED ops sharing one input: one matmul, per-column requantization, outputs split.

    int8 plans read and write uint16 codes: ``in_shift`` is the input's code shift (None: plain int8, the
    layer input), ``out_shifts`` each output's."""

    def __init__(self, layer, ops: list[Op], in_shift: int | None = None, out_shifts: tuple[int, ...] = ()):
        self.outputs = [op.output for op in ops]
        params = [layer.prepared[name] for name in self.outputs]
        fcs = [layer.fcs[name] for name in self.outputs]
        self.dtype = params[0].dtype
        self.coded = self.dtype == "int8"
        self.in_shift = in_shift
        self.out_shifts = out_shifts
        # A coded input is read as code - (128 << s) = v 2^s; weights scaled by 2^-s (exact: a power of two)
        # make every product v w again.
        self.in_offset = 0 if in_shift is None else 128 << in_shift
        w_scale = 1.0 if in_shift is None else np.ldexp(1.0, -in_shift)
        self.input_zero_point = params[0].input_zero_point
        w = np.concatenate([fc.w_q for fc in fcs]).astype(np.int64)  # [O, K]
        self.w_t = np.ascontiguousarray(w.astype(np.float64).T * w_scale)
        self.bias = np.concatenate([
            fc.bias_q.astype(np.int64) if fc.bias_q is not None else np.zeros(fc.w_q.shape[0], np.int64)
            for fc in fcs])
        self.multiplier = np.concatenate([p.output_multiplier for p in params])
        self.shift = np.concatenate([p.output_shift for p in params])
        self.out_zero_point = np.concatenate([np.full(fc.w_q.shape[0], p.output_zero_point, np.int64)
                                              for fc, p in zip(fcs, params)])
        self.qmin, self.qmax = params[0].qmin, params[0].qmax
        self.np_dtype = params[0].np_dtype
        widths = [fc.w_q.shape[0] for fc in fcs]
        self.splits = np.cumsum(widths)[:-1]
        self.width = widths[0] if len(set(widths)) == 1 else None  # every GRU group: H outputs per op
        if self.w_t.shape[0] > K.MAX_K[self.dtype]:
            raise UnsupportedModelError(f"{self.outputs}: K = {self.w_t.shape[0]} exceeds the exact-float64 "
                                        f"bound {K.MAX_K[self.dtype]} of ops_int.dot_exact_s64")
        # float32 BLAS is exact too when every partial sum of x . w is an integer below 2^24, float32's
        # integer range, whatever order BLAS adds in: max |x| * max_row sum |w| < 2^24 (int8: K up to ~1000).
        max_abs_x = -INT_MIN[self.dtype]
        self.w_t32 = None
        if max_abs_x * int(np.abs(w).sum(axis=1).max()) < (1 << 24):
            self.w_t32 = np.ascontiguousarray(w.astype(np.float32).T * np.float32(w_scale))
        # The largest |accumulator| any input can produce, per channel.
        max_acc = K.MAX_ABS_X_OFFSET[self.dtype] * np.abs(w).sum(axis=1) + np.abs(self.bias)
        # (x - zp) . w + bias = x . w + (bias - zp * sum(w)): integers, exact; saves a pass per call.
        self.bias_with_offset = self.bias - self.input_zero_point * w.sum(axis=1)
        self.bias_f64 = self.bias_with_offset.astype(np.float64)
        self.float_requant = None
        if self.dtype == "int8":
            self.bounded = bool(np.all(max_acc << np.maximum(self.shift, 0) < (1 << 31)))
            if FloatRequant.exact_for(max_acc, self.multiplier, self.shift):
                # Codes (y + 128): the zero point and the range moved up by 128.
                self.float_requant = FloatRequant(self.multiplier, self.shift, self.bias_with_offset,
                                                  self.out_zero_point + 128, max_acc, 0, 255)
        else:
            # The 64-bit requantization, with its per-channel constants precomputed; the final int64 ->
            # int32 cast can only wrap if some channel's largest result reaches 2^31.
            self.reduced = np.where(self.multiplier < 0x7FFF0000, (self.multiplier + (1 << 15)) >> 16, 0x7FFF)
            self.total_shift = 15 - self.shift
            self.rounding = np.int64(1) << (self.total_shift - 1)
            if not np.all(max_acc < F.ACC64_BOUND):
                raise UnsupportedModelError(f"{self.outputs}: a 16x8 accumulator can reach 2^47, beyond TFLite's "
                                            "64-bit requantization")
            self.bounded = bool(np.all((max_acc * self.reduced + self.rounding) >> self.total_shift < (1 << 31)))
            # (acc r + 2^(s-1)) >> s = floor(acc r / 2^s + 1/2): exact in float64 while |acc r| < 2^52.
            if self.bounded and np.all(max_acc * self.reduced < FloatRequant.EXACT_BOUND) and self.width:
                self.float_requant = _Float64Requant(self.reduced, self.total_shift, self.bias_with_offset,
                                                     self.out_zero_point, self.qmin, self.qmax)

    def _products(self, x: np.ndarray, float_type) -> np.ndarray:
        if self.in_shift is None:
            return x.astype(float_type)
        return np.subtract(x, self.in_offset, dtype=float_type)  # a code, read as v 2^s

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """x [..., rows, K] -> each op's output [..., rows, O_op] (int8 plans: codes)."""
        # Same arithmetic as ops_int.fully_connected_s8 / _s16, for all stacked channels at once.
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        if self.w_t32 is not None:
            acc_f = self._products(x2, np.float32) @ self.w_t32  # integers below 2^24: exact in float32
        else:
            acc_f = self._products(x2, np.float64) @ self.w_t  # |x| <= 2^15: within dot_exact_s64's bound
        if self.float_requant is not None and not self.coded:
            # int16: each op's output written apart, contiguous (as the int16 loops read it)
            out = self.float_requant(acc_f, np.empty((len(self.outputs), acc_f.shape[0], self.width), np.int16))
            return [block.reshape(*lead, -1) for block in out]
        acc_f = acc_f.reshape(*lead, -1)
        if self.float_requant is not None:
            y = self.float_requant.to_uint16(acc_f)
        else:
            y = self._integer_requant(acc_f)
        outs = np.split(y, self.splits, axis=-1)
        for out, shift in zip(outs, self.out_shifts):
            if shift:
                out <<= shift  # a view into y: shifts its columns in place
        return outs

    def _integer_requant(self, acc_f: np.ndarray) -> np.ndarray:
        acc = (acc_f.astype(np.float64) + self.bias_f64).astype(np.int64)  # integers below 2^53: exact
        if self.dtype == "int8":
            if self.bounded:
                y = requantize_bounded(acc, self.multiplier, self.shift)
            else:
                y = F.multiply_by_quantized_multiplier(F.wrap_int32(acc), self.multiplier, self.shift)
        else:
            y = (acc * self.reduced + self.rounding) >> self.total_shift
            if not self.bounded:
                y = F.wrap_int32(y)
        y = np.clip(y + self.out_zero_point, self.qmin, self.qmax)
        return (y + 128).astype(np.uint16) if self.coded else y.astype(self.np_dtype)


class Table2D:
    """An int8 binary op (optionally followed by a unary op) as one table over the sum of its two codes.

    The operands' codes are (a + 128) << sa and (b + 128) << sb with {sa, sb} = {0, 8}: their sum is a
    16-bit index; the table holds the result's own code."""

    def __init__(self, layer, op: Op, unary: Op | None, shifts: dict[str, int]):
        v = _all_values("int8")
        a, b = np.meshgrid(v, v, indexing="ij")
        out = _BINARY_KERNELS[(op.kind, "int8")](a, b, layer.prepared[op.output])
        if unary is not None:
            out = _UNARY_KERNELS[(unary.kind, "int8")](out, layer.prepared[unary.output])
        sa, sb = (shifts[name] for name in op.inputs)
        assert {sa, sb} == {LOW, HIGH}, (op, sa, sb)
        index = encode_s8(a, sa) + encode_s8(b, sb)
        self.table = np.zeros(1 << 16, np.uint16)
        self.table[index.ravel()] = encode_s8(out, shifts[(unary or op).output]).ravel()

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.take(self.table, a + b)


class Table1D:
    """A unary op over every value of its input type (int8: indexed by the input's code)."""

    def __init__(self, layer, op: Op, dtype: str, shifts: dict[str, int]):
        v = _all_values(dtype)
        out = _UNARY_KERNELS[(op.kind, dtype)](v, layer.prepared[op.output])
        if dtype == "int8":
            self.table = np.zeros(1 << 16, np.uint16)
            self.table[encode_s8(v, shifts[op.inputs[0]])] = encode_s8(out, shifts[op.output])
            self.uint = np.uint16
        else:
            self.table = out
            self.uint = _UINT[dtype]

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return np.take(self.table, a.view(self.uint))


def _same_shape(a: np.ndarray, b: np.ndarray) -> tuple[int, ...]:
    """The shape both operands of a compiled int16 loop share (the loops do not broadcast)."""
    if a.shape != b.shape:
        raise ValueError(f"int16 loop operands must have one shape, got {a.shape} and {b.shape}")
    return a.shape


class AddSub16:
    """int16 ADD / SUB: each input's rescaled term (a table, or a shift), then the kernel's output rescale, and
    the table of a LOGISTIC / TANH folded in (``unary``): one call of ``int16_loops.add_sub_s16``.

    Inputs named in ``held`` arrive as their terms already (``term``, applied ahead by ``LayerPlan.hold``)."""

    def __init__(self, layer, op: Op, held: frozenset[str] = frozenset(), unary: Op | None = None):
        p = self.params = layer.prepared[op.output]
        self.held = tuple(name in held for name in op.inputs)
        v = _all_values("int16").astype(np.int64)
        self.tables, self.shifts = [], []  # per input: its term table, or None where a shift gives the term
        largest_term = 0
        for zero_point, requant in ((p.input1_zero_point, p.input1), (p.input2_zero_point, p.input2)):
            # The input half of ops_int._add_or_sub, for every int16 input; int32 (the terms are int32 values).
            table = F.rescale_smaller_than_one((v - zero_point) << p.left_shift, requant).astype(np.int32)
            # The input of the larger scale is rescaled by exactly 1/2 (multiplier 2^30, shift 0), so its term
            # is v << (left_shift - 1) (SaturatingRoundingDoublingHighMul(v 2^15, 2^30) = floor(v 2^14 + 1/2)):
            # a shift, cheaper than a gather. Confirmed against the table, not assumed.
            linear = zero_point == 0 and np.array_equal(table, v << (p.left_shift - 1))
            largest_term += int(np.abs(table.astype(np.int64)).max())
            self.tables.append(None if linear else table)
            self.shifts.append(p.left_shift - 1 if linear else None)
        self.b_sign = 1 if op.kind == ADD else -1
        # A LOGISTIC / TANH that is this op's only consumer, folded in: its table over every int16 value.
        self.lut = None if unary is None else \
            _UNARY_KERNELS[(unary.kind, "int16")](_all_values("int16"), layer.prepared[unary.output])
        self.multiplier = int(p.output.multiplier)
        self.right = int(-p.output.shift)
        self.lo, self.hi = p.qmin - p.output_zero_point, p.qmax - p.output_zero_point
        # |term| <= 2^30 * 1/2 (Prepare's input rescales are <= 1/2), so |raw| < 2^31: requantize_bounded's
        # precondition, and the int32 sum cannot wrap; the output shift is <= 0 (SmallerThanOneExp).
        if p.output.shift > 0 or largest_term >= (1 << 31):
            raise UnsupportedModelError(f"{op.output}: int16 {op.kind} parameters outside what Prepare guarantees "
                                        "(output shift > 0 or terms reaching 2^31)")

    def term(self, i: int, x: np.ndarray) -> np.ndarray:
        """Input i's rescaled term (int32) for int16 values x."""
        if self.shifts[i] is not None:
            return np.left_shift(x, self.shifts[i], dtype=np.int32)
        return np.take(self.tables[i], x.view(np.uint16))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty(_same_shape(a, b), np.int16)
        return L.add_sub_s16(*self._loop_input(0, a), *self._loop_input(1, b), self.b_sign, self.multiplier,
                             self.right, self.lo, self.hi, self.params.output_zero_point, self.lut, out)

    def _loop_input(self, i: int, x: np.ndarray) -> tuple:
        """Input i as int16_loops.add_sub_s16 reads it: (values or held terms, table, shift)."""
        if self.held[i]:
            return x, None, None
        return x, self.tables[i], self.shifts[i]


class Mul16:
    """int16 MUL (zero points 0, as TFLM requires): a b, |a b| <= 2^30, requantized as requantize_bounded,
    in one call of ``int16_loops.mul_s16``."""

    def __init__(self, layer, op: Op):
        p = self.params = layer.prepared[op.output]
        self.multiplier = int(p.output.multiplier)
        self.right = int(-p.output.shift)
        self.lo, self.hi = p.qmin - p.output_zero_point, p.qmax - p.output_zero_point

    @staticmethod
    def applies(layer, op: Op) -> bool:
        p = layer.prepared[op.output]
        return p.output.shift <= 0 and p.input1_zero_point == 0 and p.input2_zero_point == 0

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty(_same_shape(a, b), np.int16)
        return L.mul_s16(a, b, self.multiplier, self.right, self.lo, self.hi, self.params.output_zero_point, out)


class Kernel:
    """Fallback: the specification kernel itself."""

    def __init__(self, layer, op: Op, dtype: str):
        self.fn = _BINARY_KERNELS[(op.kind, dtype)]
        self.params = layer.prepared[op.output]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.fn(a, b, self.params)


class LayerPlan:
    """Compiled steps for a sequence of ops: each step is (callable, input names, output names).

    int8 plans hold every tensor as its uint16 code (``shifts``); ``encode`` / ``decode`` convert the
    layer's state at its edge. The layer input ``x`` is read as plain integers."""

    def __init__(self, layer, ops: tuple[Op, ...]):
        dtype = layer.qparams["h"].dtype
        self.shifts = int8_encodings(layer.ops) if dtype == "int8" else {}
        shifts = self.shifts
        consumers: dict[str, list[Op]] = {}
        for op in ops:
            for name in op.inputs:
                consumers.setdefault(name, []).append(op)
        folded: set[str] = set()  # unary ops computed inside the table of the op that feeds them
        # int16: inputs from outside the plan (the input-side products; not the state h) read only by one ADD
        # or SUB arrive as that op's term, computed ahead for a block of steps (``hold``).
        produced = {op.output for op in ops}
        external = [name for op in ops for name in op.inputs if name not in produced and name not in ("h", "x")]
        held = frozenset(name for name in external if dtype == "int16" and len(consumers[name]) == 1
                         and consumers[name][0].kind in (ADD, SUB))
        self.holders: dict[str, tuple[AddSub16, int]] = {}
        self.steps = []
        i = 0
        while i < len(ops):
            op = ops[i]
            if op.output in folded:
                i += 1
                continue
            if op.kind == FULLY_CONNECTED:
                group = [op]
                while i + len(group) < len(ops) and ops[i + len(group)].kind == FULLY_CONNECTED \
                        and ops[i + len(group)].inputs == op.inputs:
                    group.append(ops[i + len(group)])
                fc = FCGroup(layer, group, shifts.get(op.inputs[0]), tuple(shifts.get(g.output, 0) for g in group))
                self.steps.append((fc, op.inputs, tuple(g.output for g in group)))
                i += len(group)
                continue
            # A binary op whose only consumer is a unary op computes both (int8: one table; int16 ADD / SUB: the
            # unary op's table read in the same loop). The unary op runs later in graph order; computing it here
            # is the same function of the same inputs.
            users = consumers.get(op.output, [])
            unary = users[0] if (op.kind in BINARY and (dtype == "int8" or op.kind != MUL) and len(users) == 1
                                 and users[0].kind in UNARY) else None
            if unary is not None:
                folded.add(unary.output)
            if op.kind in UNARY:
                self.steps.append((Table1D(layer, op, dtype, shifts), op.inputs, (op.output,)))
            elif dtype == "int8":
                self.steps.append((Table2D(layer, op, unary, shifts), op.inputs, ((unary or op).output,)))
            elif op.kind in (ADD, SUB):
                add_sub = AddSub16(layer, op, held, unary)
                self.holders.update({name: (add_sub, slot) for slot, name in enumerate(op.inputs)
                                     if name in held})
                self.steps.append((add_sub, op.inputs, ((unary or op).output,)))
            elif Mul16.applies(layer, op):
                self.steps.append((Mul16(layer, op), op.inputs, (op.output,)))
            else:
                self.steps.append((Kernel(layer, op, dtype), op.inputs, (op.output,)))
            i += 1

    def encode(self, name: str, values: np.ndarray) -> np.ndarray:
        """Integer values of tensor ``name`` -> how this plan holds them."""
        return encode_s8(values, self.shifts[name]) if self.shifts else values

    def decode(self, name: str, held: np.ndarray) -> np.ndarray:
        """How this plan holds tensor ``name`` -> its integer values."""
        return decode_s8(held, self.shifts[name]) if self.shifts else held

    def hold(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs from outside the plan (integer values) -> as ``run`` reads them (int16 ADD/SUB terms)."""
        return {name: (self.holders[name][0].term(self.holders[name][1], v) if name in self.holders else v)
                for name, v in inputs.items()}

    def run(self, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for fn, inputs, outputs in self.steps:
            if isinstance(fn, FCGroup):  # the only step with several outputs
                for name, value in zip(outputs, fn(*[env[name] for name in inputs])):
                    env[name] = value
            else:
                env[outputs[0]] = fn(*[env[name] for name in inputs])
        return env
