"""``export_c(qmodel, out_dir)``: a quantized GRU as C constants for firmware_ref's fused kernel.

Writes ``<name>.h`` / ``<name>.c`` (every weight, bias, multiplier, shift, zero point and table of the model,
as the structs of ``firmware_ref/include/grukit_gru.h``; the header also holds ``<name>_quantize_input``,
the float -> integer input step giving QParams.quantize's integers) and an example ``main.c`` with the
streaming loop.
The files start with a banner naming grukit's version, the model and the scheme, and hold no date: the same
model always gives the same bytes.

What the generator decides for the int8 kernel (the C side only indexes and multiplies):
- LOGISTIC / TANH outputs depend only on the int8 input: a 256-entry table per op, filled by the NumPy
  runtime's own kernel (``grukit.runtime.ops_int``), so the C lookup is the runtime's function.
- ADD / SUB: each input's term ((x - zp) << 20, rescaled by that input's multiplier) depends only on that
  int8 input: a 256-entry int32 table per input, filled with ``multiply_by_quantized_multiplier``.
- Every requantization becomes a ``grukit_requant_s32`` (SMMLAR, an add of the sign, a shift). The identity
  holds while |x| * 2^left_shift < 2^29; the generator bounds every accumulator and term from the actual
  weights, biases and zero points and refuses (UnsupportedModelError) a model that could exceed it.
- The three gates' products are stacked into one product per input (x, h), each gate padded to 4 rows.
- Weights are packed two rows per halfword (256 wA + wB, exact for symmetric int8) in 4-row blocks, the
  order the kernel reads them; the packed accumulator 256 accA + accB is bounded below 2^31 the same way.
For the 16x8 kernel (int16 activations, int8 weights):
- The gate products are stacked the same way; weights stay int8 (no flash cost), four columns per word in
  the byte order (0, 2, 1, 3) so SXTB16 / SXTB16 ROR 8 pair them with two int16 input words for SMLAD.
- The dot product runs in int32 (the generator proves |x| sum |w| < 2^31 per row); the int64 bias and the
  rounding of TFLite's 64-bit requantization fold into one int64 start value per row, so each row costs
  one SMLAL and a shift (grukit_requant_s64): exact for every bias TFLite accepts.
- ADD / SUB input terms and every element-wise output use the SMMLAR form of grukit_requant_s32 on doubled
  inputs (|x| <= 2^30, checked); LOGISTIC / TANH keep TFLite's interpolated sigmoid table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grukit.errors import BadInputError, UnsupportedModelError
from grukit.model import GATE_N, GATE_R, GATE_Z
from grukit.quantize.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, step_ops
from grukit.runtime import ops_int as K

GATES = (("z", GATE_Z), ("r", GATE_R), ("n", GATE_N))
REQUANT_BOUND = 1 << 29  # |x| * 2^left_shift must stay below this (grukit_requant_s32's contract)
MAX_RIGHT_SHIFT = 30  # a larger right shift gives 0 on |y| < 2^29 just as 30 does, and 2^30 fits int32

# The graph the C kernel hard-codes, as (kind, inputs) per output tensor: checked against step_ops so a
# change of the graph cannot silently desynchronise the generated constants and the kernel.
_KERNEL_GRAPH = {
    "z_pre": (ADD, ("gx_z", "gh_z")), "r_pre": (ADD, ("gx_r", "gh_r")),
    "z": (LOGISTIC, ("z_pre",)), "r": (LOGISTIC, ("r_pre",)), "n": (TANH, ("n_pre",)),
    "h_minus_n": (SUB, ("h", "n")), "z_diff": (MUL, ("z", "h_minus_n")), "h_new": (ADD, ("n", "z_diff")),
}  # fmt: skip
_KERNEL_GRAPH_LBR = {
    1: {"r_gh": (MUL, ("r", "gh_n")), "n_pre": (ADD, ("gx_n", "r_gh")), "gh_n": (FULLY_CONNECTED, ("h",))},
    0: {"r_h": (MUL, ("r", "h")), "n_pre": (ADD, ("gx_n", "gh_n")), "gh_n": (FULLY_CONNECTED, ("r_h",))},
}


def _check_graph(lbr: int) -> dict:
    ops = {op.output: op for op in step_ops(lbr)}
    expected = {**_KERNEL_GRAPH, **_KERNEL_GRAPH_LBR[lbr]}
    for g, _ in GATES:
        expected.setdefault(f"gx_{g}", (FULLY_CONNECTED, ("x",)))
        if g != "n":
            expected[f"gh_{g}"] = (FULLY_CONNECTED, ("h",))
    got = {name: (op.kind, op.inputs) for name, op in ops.items()}
    if got != expected:
        raise UnsupportedModelError(
            f"the step graph (grukit.quantize.graph, linear_before_reset={lbr}) is not the one the C kernel "
            f"implements: {sorted(set(got.items()) ^ set(expected.items()))}")
    return ops


# ---------------------------------------------------------------------------------------------------------
# Integer parameters in the kernel's form
# ---------------------------------------------------------------------------------------------------------


def fast_requant(multiplier: int, shift: int, zero_point: int, abs_bound: int, what: str,
                 max_abs_input: int = REQUANT_BOUND - 1) -> tuple[int, int, int, int]:
    """grukit_requant_s32 (multiplier, rounding, right_shift, left_shift) for TFLite's (multiplier, shift)
    followed by + zero_point, valid for every input |x| <= abs_bound; raises UnsupportedModelError when an
    intermediate of the kernel's evaluation could leave int32 (see the header's contract).

    The right shift e is lowered to bit_length(y_bound) + 1 when larger: every |y| <= y_bound then rounds
    to 0 under both shifts, and the rounding constant zp * 2^e stays small. The left shift is max(shift, 0),
    which the bound keeps in [0, 28] (|x| >= 1 shifted by 29 reaches 2^29); for abs_bound 0 (every input is
    0, e.g. an all-zero row) it is 0, since there is nothing to scale. max_abs_input: the largest |x| shifted
    the caller's evaluation holds (2^29 - 1 for the int8 kernel; 16x8 passes 2^30, see _requant_16x8)."""
    left = max(int(shift), 0) if abs_bound else 0
    if int(abs_bound) << left > max_abs_input:
        raise UnsupportedModelError(
            f"{what}: values up to {abs_bound} shifted left by {left} exceed {max_abs_input} (about "
            f"2^{(max_abs_input + 1).bit_length() - 1}); the C kernel's exact "
            "requantization needs less (an unusually large bias or multiplier)")
    y_bound = ((int(abs_bound) << left) * int(multiplier) >> 31) + 1  # bounds |SRDHM(x * 2^left, m)|
    e = min(max(-int(shift), 0), MAX_RIGHT_SHIFT, y_bound.bit_length() + 1)
    rounding = (1 << (e - 1)) + int(zero_point) * (1 << e) if e > 0 else int(zero_point)
    if y_bound + 1 + abs(rounding) >= 1 << 31:
        raise UnsupportedModelError(
            f"{what}: zero point {zero_point} with right shift {e} overflows the C kernel's int32 rounding "
            "constant (an output scale far smaller than its inputs')")
    return int(multiplier), rounding, e, left


def apply_fast_requant(x, q) -> np.ndarray:
    """NumPy evaluation of the kernel's requantization on x (fed doubled, as the kernel does), for checking
    the identity: requant_fast_s32 when right_shift >= 1, requant_general_s32 in every case."""
    m, rounding, e, ls = q
    shifted = (2 * np.asarray(x, np.int64)) << ls
    y = ((shifted * m + (1 << 31)) >> 32) + rounding
    return (y + (shifted >> 63 if e > 0 else 0)) >> e


def _offset_range(zero_point: int) -> int:
    """max |x - zp| over int8 x."""
    return max(127 - zero_point, zero_point + 128)


def _packed_pairs(w: np.ndarray) -> np.ndarray:
    """int8 [O4, K] (O4 a multiple of 4) -> int32 words in grukit_fc_s8's layout: rows paired (B = 2p,
    A = 2p + 1), column k of a pair the int16 256 wA[k] + wB[k], two columns per word (the first in bits
    0-15), ordered [block of 4 rows][4-column group][pair][2 words]; the depth zero padded to 8."""
    o4, k = w.shape
    padded = np.zeros((o4, -(-k // 8) * 8), np.int64)
    padded[:, :k] = w
    halves = (256 * padded[1::2] + padded[0::2]) & 0xFFFF  # [pairs, K8]; exact int16 since |w| <= 127
    words = halves[:, 0::2] | (halves[:, 1::2] << 16)  # [pairs, K8 / 2]
    blocks, groups = o4 // 4, words.shape[1] // 2
    ordered = words.reshape(blocks, 2, groups, 2).transpose(0, 2, 1, 3).ravel()
    return np.where(ordered >= 1 << 31, ordered - (1 << 32), ordered)


_INT8_INPUTS = np.arange(-128, 128).astype(np.int8)


def _add_term_table(zero_point: int, left_shift: int, requant) -> np.ndarray:
    shifted = (_INT8_INPUTS.astype(np.int64) - zero_point) << left_shift
    return K.multiply_by_quantized_multiplier(shifted, requant.multiplier, requant.shift)


# ---------------------------------------------------------------------------------------------------------
# C text
# ---------------------------------------------------------------------------------------------------------


class _CFile:
    """Accumulates named constant arrays and struct initializers of one generated .c file."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.chunks: list[str] = []
        self.flash_bytes = 0

    def requants(self, name: str, requants: list) -> str:
        """A grukit_requant_s32 array, one {multiplier, left_shift, round, right_shift} per row."""
        sym = f"{self.prefix}_{name}"
        body = ",\n    ".join(_requant_init(q) for q in requants)
        self.chunks.append(f"static const grukit_requant_s32 {sym}[{len(requants)}] = {{\n    {body}\n}};\n")
        self.flash_bytes += 16 * len(requants)
        return sym

    def requants_s64(self, name: str, requants: list) -> str:
        """A grukit_requant_s64 array, one {start, multiplier, right_shift, left_shift} per row."""
        sym = f"{self.prefix}_{name}"
        body = ",\n    ".join(f"{{{_i64_literal(q[0])}, {q[1]}, {q[2]}, {q[3]}}}" for q in requants)
        self.chunks.append(f"static const grukit_requant_s64 {sym}[{len(requants)}] = {{\n    {body}\n}};\n")
        self.flash_bytes += 16 * len(requants)
        return sym

    def array(self, name: str, ctype: str, values, per_line: int = 16, align: bool = False) -> str:
        values = [int(v) for v in np.asarray(values).ravel()]
        sym = f"{self.prefix}_{name}"
        fmt = _LITERAL[ctype]
        body = ",\n    ".join(", ".join(fmt(v) for v in values[i:i + per_line])
                              for i in range(0, len(values), per_line))
        attr = " GRUKIT_ALIGN4" if align else ""
        self.chunks.append(f"static const {ctype} {sym}[{len(values)}]{attr} = {{\n    {body}\n}};\n")
        self.flash_bytes += len(values) * _SIZE[ctype]
        return sym


def _i32_literal(v: int) -> str:
    return "INT32_MIN" if v == -(1 << 31) else str(v)


def _i64_literal(v: int) -> str:
    return "INT64_MIN" if v == -(1 << 63) else f"INT64_C({v})"


_LITERAL = {"int8_t": str, "int16_t": str, "int32_t": _i32_literal, "int64_t": _i64_literal}
_SIZE = {"int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8}


def _requant_init(q) -> str:
    return "{" + ", ".join(str(v) for v in q) + "}"


# ---------------------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------------------


PACKED_BOUND = 1 << 31  # |256 * accA + accB| must fit int32 (grukit_fc_s8)


def _fc_s8(cf: _CFile, tag: str, parts: list) -> str:
    """One grukit_fc_s8 stacking the (fc, prepared params) parts, each padded to a multiple of 4 rows."""
    offsets = {int(params.input_zero_point) for _, params in parts}
    if len(offsets) != 1:
        raise UnsupportedModelError(f"{tag}: stacked gate products with different input zero points {offsets}")
    zp_in = offsets.pop()
    reach = _offset_range(zp_in)
    weights, biases, requants = [], [], []
    depth = None
    for fc, params in parts:
        w = np.asarray(fc.w_q, np.int8)
        rows, depth = w.shape
        if (w == -128).any():
            raise UnsupportedModelError(f"{tag}: weight -128 (the C kernel packs symmetric weights in [-127, 127])")
        bias = np.zeros(rows, np.int64) if fc.bias_q is None else np.asarray(fc.bias_q, np.int64)
        bounds = np.abs(bias) + reach * np.abs(w.astype(np.int64)).sum(axis=1)
        zp = params.output_zero_point
        start = len(biases)
        requants += [fast_requant(m, s, zp, b, f"{tag} row {start + o}")
                     for o, (m, s, b) in enumerate(zip(params.output_multiplier, params.output_shift, bounds))]
        pad = -rows % 4
        weights.append(np.concatenate([w.astype(np.int64), np.zeros((pad, depth), np.int64)]))
        biases += [*bias.tolist(), *[0] * pad]
        requants += [(0, 0, 1, 0)] * pad  # a padding row's output is 0
    w_all = np.concatenate(weights)
    bias2 = 2 * np.asarray(biases, np.int64)
    doubled = bias2 + 2 * reach * np.abs(w_all).sum(axis=1)  # bounds |2 (bias + dot)| per row
    packed = 256 * doubled[1::2] + doubled[0::2]
    if (packed >= PACKED_BOUND).any():
        row = 2 * int(np.argmax(packed >= PACKED_BOUND)) + 1
        raise UnsupportedModelError(
            f"{tag} row {row}: |bias| + |x - zp| * sum |w| up to {int(doubled[row]) // 2} is too large for the C "
            "kernel's packed products (needs 256 x that, doubled, below 2^31)")
    start = np.stack([256 * bias2[1::2] + bias2[0::2], bias2[0::2]], axis=1).ravel()
    general = int(any(q[3] or q[2] == 0 for q in requants))
    w_sym = cf.array(f"{tag}_weights", "int32_t", _packed_pairs(w_all), per_line=8)
    b_sym = cf.array(f"{tag}_bias_start", "int32_t", start, per_line=8)
    q_sym = cf.requants(f"{tag}_requant", requants)
    rows = len(biases) - pad  # the last part's padding is the kernel's round_up4
    return f"{{{rows}, {depth}, {w_sym}, {b_sym}, {q_sym}, {-zp_in}, {general}}}"


_NO_FC_S8 = "{0, 0, NULL, NULL, NULL, 0, 0}"


def _check_fast(q, what: str) -> None:
    if q[2] == 0:
        raise UnsupportedModelError(f"{what}: right shift 0 (an output scale at least half the input's); the "
                                    "C kernel's element-wise requantization needs a right shift")


def _add_s8(cf: _CFile, tag: str, p) -> str:
    t1 = _add_term_table(p.input1_zero_point, p.left_shift, p.input1)
    t2 = _add_term_table(p.input2_zero_point, p.left_shift, p.input2)
    sym1 = cf.array(f"{tag}_term1x2", "int32_t", 2 * t1, per_line=8)
    sym2 = cf.array(f"{tag}_term2x2", "int32_t", 2 * t2, per_line=8)
    bound = int(np.abs(t1).max() + np.abs(t2).max())
    q = fast_requant(p.output.multiplier, p.output.shift, p.output_zero_point, bound, f"{tag} output")
    if q[3] != 0:
        raise UnsupportedModelError(f"{tag}: an ADD/SUB output rescale must have shift <= 0, got {p.output}")
    _check_fast(q, f"{tag} output")
    return f"{{{sym1} + 128, {sym2} + 128, {_requant_init(q)}}}"


def _mul_s8(tag: str, p) -> str:
    bound = _offset_range(p.input1_zero_point) * _offset_range(p.input2_zero_point)
    q = fast_requant(p.output.multiplier, p.output.shift, p.output_zero_point, bound, f"{tag} output")
    _check_fast(q, f"{tag} output")
    scale = 2 << q[3]  # the doubling and the left shift, folded into the first factor
    return f"{{{scale}, {-p.input1_zero_point * scale}, {-p.input2_zero_point}, {_requant_init(q)}}}"


def _activation_table(cf: _CFile, tag: str, kind: str, p) -> str:
    kernel = K.logistic_s8 if kind == LOGISTIC else K.tanh_s8
    return cf.array(f"{tag}_table", "int8_t", kernel(_INT8_INPUTS, p)) + " + 128"


def _stacked_products(cf: _CFile, tag: str, layer, write_fc, no_fc: str) -> tuple[str, str, str]:
    """The layer's fully connected products as the kernels stack them, written with write_fc (_fc_s8 or
    _fc_s16): every gate over x; over h the gates that read h itself (all three for linear_before_reset = 1;
    z and r for 0, where gh_n reads r * h and is a product of its own, else no_fc)."""
    pre, fcs = layer.prepared, layer.fcs
    x_fc = write_fc(cf, f"{tag}_gx", [(fcs[f"gx_{g}"], pre[f"gx_{g}"]) for g, _ in GATES])
    h_gates = [g for g, _ in GATES if layer.linear_before_reset or g != "n"]
    h_fc = write_fc(cf, f"{tag}_gh", [(fcs[f"gh_{g}"], pre[f"gh_{g}"]) for g in h_gates])
    hn_fc = no_fc if layer.linear_before_reset else write_fc(cf, f"{tag}_gh_n", [(fcs["gh_n"], pre["gh_n"])])
    return x_fc, h_fc, hn_fc


def _layer_s8(cf: _CFile, li: int, layer) -> str:
    _check_graph(layer.linear_before_reset)
    pre = layer.prepared
    tag = f"l{li}"
    lbr = layer.linear_before_reset
    x_fc, h_fc, hn_fc = _stacked_products(cf, tag, layer, _fc_s8, _NO_FC_S8)
    r_mul = "r_gh" if lbr else "r_h"
    fields = [
        str(layer.input_size), str(layer.hidden_size), str(lbr), x_fc, h_fc, hn_fc,
        _add_s8(cf, f"{tag}_z_pre", pre["z_pre"]), _add_s8(cf, f"{tag}_r_pre", pre["r_pre"]),
        _add_s8(cf, f"{tag}_n_pre", pre["n_pre"]), _add_s8(cf, f"{tag}_h_minus_n", pre["h_minus_n"]),
        _add_s8(cf, f"{tag}_h_new", pre["h_new"]),
        _mul_s8(f"{tag}_{r_mul}", pre[r_mul]), _mul_s8(f"{tag}_z_diff", pre["z_diff"]),
        _activation_table(cf, f"{tag}_z", LOGISTIC, pre["z"]),
        _activation_table(cf, f"{tag}_r", LOGISTIC, pre["r"]),
        _activation_table(cf, f"{tag}_n", TANH, pre["n"]),
    ]
    return "{\n        " + ",\n        ".join(fields) + "\n    }"


# ---------------------------------------------------------------------------------------------------------
# 16x8
# ---------------------------------------------------------------------------------------------------------


ACC32_BOUND = 1 << 31  # a 16x8 dot product (bias excluded), shifted by its row's left_shift, must fit int32
START64_BOUND = 1 << 63  # the scaled 64-bit row value (start + dot * multiplier) must fit int64
# 16x8 element-wise requantizations take x with |x| <= 2^30, fed doubled: x is an int16 shifted by 15 (ADD/SUB
# input terms, in [-2^30, 2^30 - 2^15]), a product (MUL: input1 is a LOGISTIC output in [0, 32767], so
# |r * b| <= 32767 * 32768 < 2^30) or a sum of two terms checked below 2^30: 2x always fits int32.
S16_MAX_ABS_INPUT = 1 << 30


def _requant_fc_s16(multiplier: int, shift: int, bias: int, dot_bound: int, what: str) -> tuple[int, int, int, int]:
    """grukit_requant_s64 (start, multiplier, right_shift, left_shift) of one 16x8 FULLY_CONNECTED row.

    TFLite's 64-bit requantization is floor((acc * R + 2^(ts - 1)) / 2^ts), R the multiplier rounded to
    15 bits, ts = 15 - shift in [8, 46], acc = dot + bias. The kernel computes the dot product in int32 and
    one SMLAL: V = start + (dot << L) * M with M = R << k and start = (bias * R + 2^(ts - 1)) << (L + k),
    so V = (acc * R + 2^(ts - 1)) * 2^(L + k) exactly; L + k = 32 - ts when ts <= 32 (k <= 16 keeps M below
    2^31, L = max(16 - ts, 0) supplies the rest), so the high word of V is the result; for ts > 32, k = L = 0
    and the high word is shifted right by e = ts - 32 (floor of a floor). The rounding lives in start, the
    bias is int64 as TFLite's: only the dot product needs a bound, |dot| << L < 2^31, and |V| < 2^63, which
    also makes the result an int32 (TFLite's wrap to int32 never triggers). Raises UnsupportedModelError
    naming the row otherwise."""
    reduced = (int(multiplier) + (1 << 15)) >> 16 if multiplier < 0x7FFF0000 else 0x7FFF
    ts = 15 - int(shift)
    k = min(16, max(32 - ts, 0))
    left = max(16 - ts, 0)
    right = max(ts - 32, 0)
    if dot_bound << left >= ACC32_BOUND:
        raise UnsupportedModelError(
            f"{what}: |x| * sum |w| up to {dot_bound} (shifted left by {left}) does not fit the C kernel's int32 "
            "dot product (needs below 2^31: fewer inputs or smaller weights)")
    start = (int(bias) * reduced + (1 << (ts - 1))) << (left + k)
    v_bound = ((abs(int(bias)) + dot_bound) * reduced + (1 << (ts - 1))) << (left + k)
    if v_bound >= START64_BOUND:
        raise UnsupportedModelError(
            f"{what}: bias {bias} with multiplier {multiplier} and shift {shift} overflows the C kernel's 64-bit "
            "row value (an unusually large bias)")
    return start, reduced << k, right, left


def apply_requant_fc_s16(dot, q) -> np.ndarray:
    """NumPy evaluation of the kernel's 16x8 row requantization (grukit_requant_s64, before saturation) on
    int32 dot products, for checking the identity against TFLite's 64-bit requantization."""
    start, multiplier, right_shift, left_shift = q
    dot = np.asarray(dot, np.int64).astype(object)  # Python integers: the check must not wrap
    return np.array([((start + (d << left_shift) * multiplier) >> 32) >> right_shift for d in dot], np.int64)


def _packed_quads(w: np.ndarray) -> np.ndarray:
    """int8 [O4, K] (O4 a multiple of 4) -> int32 words in grukit_fc_s16's layout: [block of 4 rows][4-column
    group][row], the depth zero padded to 8; the bytes of a word are columns (0, 2, 1, 3) of the group, so
    SXTB16 gives the pair (w0, w1) and SXTB16 ROR 8 the pair (w2, w3), matching the int16 input words
    (x0, x1) and (x2, x3)."""
    o4, k = w.shape
    padded = np.zeros((o4, -(-k // 8) * 8), np.int64)
    padded[:, :k] = w
    groups = padded.shape[1] // 4
    quads = padded.reshape(o4 // 4, 4, groups, 4).transpose(0, 2, 1, 3)[..., [0, 2, 1, 3]] & 0xFF
    words = quads[..., 0] | (quads[..., 1] << 8) | (quads[..., 2] << 16) | (quads[..., 3] << 24)
    words = words.ravel()
    return np.where(words >= 1 << 31, words - (1 << 32), words)


def _fc_s16(cf: _CFile, tag: str, parts: list) -> str:
    """One grukit_fc_s16 stacking the (fc, prepared params) parts, each padded to a multiple of 4 rows."""
    weights, requants = [], []
    depth = pad = 0
    for fc, params in parts:
        if params.input_zero_point != 0 or params.output_zero_point != 0:
            raise UnsupportedModelError(f"{tag}: a 16x8 product with a zero point (int16 tensors are symmetric)")
        if (params.qmin, params.qmax) != (-32768, 32767):
            raise UnsupportedModelError(f"{tag}: a fused activation clamp [{params.qmin}, {params.qmax}]")
        w = np.asarray(fc.w_q, np.int8).astype(np.int64)
        rows, depth = w.shape
        bias = np.zeros(rows, np.int64) if fc.bias_q is None else np.asarray(fc.bias_q, np.int64)
        dot_bounds = 32768 * np.abs(w).sum(axis=1)  # |x| <= 32768 for int16 x
        start = len(requants)
        requants += [_requant_fc_s16(int(m), int(s), int(b), int(d), f"{tag} row {start + o}")
                     for o, (m, s, b, d) in enumerate(zip(params.output_multiplier, params.output_shift, bias,
                                                           dot_bounds))]
        pad = -rows % 4
        weights.append(np.concatenate([w, np.zeros((pad, depth), np.int64)]))
        requants += [(0, 0, 0, 0)] * pad  # a padding row's output is 0
    w_sym = cf.array(f"{tag}_weights", "int32_t", _packed_quads(np.concatenate(weights)), per_line=8)
    q_sym = cf.requants_s64(f"{tag}_requant", requants)
    rows = len(requants) - pad  # the last part's padding is the kernel's round_up4
    return f"{{{rows}, {depth}, {w_sym}, {q_sym}}}"


_NO_FC_S16 = "{0, 0, NULL, NULL}"


def _requant_16x8(requant, abs_bound: int, what: str, need_right_shift: bool) -> tuple[int, int, int, int]:
    q = fast_requant(requant.multiplier, requant.shift, 0, abs_bound, what, max_abs_input=S16_MAX_ABS_INPUT)
    if need_right_shift:
        _check_fast(q, what)
    return q


def _add_s16(tag: str, p) -> str:
    """grukit_add_fast_s16: each input's term rescales x << 15 (x fed doubled as x << 16); the larger input
    scale gives the multiplier 1/2 exactly, right shift 0, hence the sign masks (0 where no rounding)."""
    if (p.input1_zero_point, p.input2_zero_point, p.output_zero_point, p.left_shift) != (0, 0, 0, 15):
        raise UnsupportedModelError(f"{tag}: a 16x8 ADD/SUB with zero points or left shift {p.left_shift}")
    if (p.qmin, p.qmax) != (-32768, 32767):
        raise UnsupportedModelError(f"{tag}: a fused activation clamp [{p.qmin}, {p.qmax}]")
    extremes = np.array([-32768 << 15, 32767 << 15], np.int64)
    terms, bound = [], 0
    for i, requant in enumerate((p.input1, p.input2), 1):
        q = _requant_16x8(requant, 1 << 30, f"{tag} input{i}", need_right_shift=False)
        if q[3] != 0:
            raise UnsupportedModelError(f"{tag}: input{i} rescale must have shift <= 0, got {requant}")
        terms.append(q)
        bound += int(np.abs(K.rescale_smaller_than_one(extremes, requant)).max())  # the term is monotone in x
    if bound >= S16_MAX_ABS_INPUT:
        raise UnsupportedModelError(f"{tag}: input terms up to {bound} in sum reach 2^30 (input scales far apart)")
    out = _requant_16x8(p.output, bound, f"{tag} output", need_right_shift=True)
    if out[3] != 0:
        raise UnsupportedModelError(f"{tag}: an ADD/SUB output rescale must have shift <= 0, got {p.output}")
    masks = [-1 if q[2] > 0 else 0 for q in terms]
    return "{" + ", ".join([*map(_requant_init, (*terms, out)), *map(str, masks)]) + "}"


def _mul_s16(tag: str, p) -> str:
    if (p.input1_zero_point, p.input2_zero_point, p.output_zero_point) != (0, 0, 0):
        raise UnsupportedModelError(f"{tag}: a 16x8 MUL with zero points")
    if (p.qmin, p.qmax) != (-32768, 32767):
        raise UnsupportedModelError(f"{tag}: a fused activation clamp [{p.qmin}, {p.qmax}]")
    # input1 is z or r, a LOGISTIC output in [0, 32767] (the graph check pins that): see S16_MAX_ABS_INPUT.
    q = _requant_16x8(p.output, 32767 * 32768, f"{tag} output", need_right_shift=True)
    if q[3] != 0:
        raise UnsupportedModelError(f"{tag}: a 16x8 MUL output rescale with a left shift ({p.output})")
    return _requant_init(q)


def _table_input_s16(p) -> str:
    """grukit_table_input_s16: TFLite's power-of-two case (multiplier 0) resolved to 3 << shift, no shift."""
    multiplier, shift = int(p.input_multiplier), int(p.input_left_shift)
    if multiplier == 0:
        multiplier, shift = 3 << shift, 0
    rounding = 1 << (shift - 1) if shift > 0 else 0
    return f"{{{multiplier}, {rounding}, {shift}}}"


def _layer_s16(cf: _CFile, li: int, layer) -> str:
    _check_graph(layer.linear_before_reset)
    pre = layer.prepared
    tag = f"l{li}"
    lbr = layer.linear_before_reset
    x_fc, h_fc, hn_fc = _stacked_products(cf, tag, layer, _fc_s16, _NO_FC_S16)
    r_mul = "r_gh" if lbr else "r_h"
    fields = [
        str(layer.input_size), str(layer.hidden_size), str(lbr), x_fc, h_fc, hn_fc,
        _add_s16(f"{tag}_z_pre", pre["z_pre"]), _add_s16(f"{tag}_r_pre", pre["r_pre"]),
        _add_s16(f"{tag}_n_pre", pre["n_pre"]), _add_s16(f"{tag}_h_minus_n", pre["h_minus_n"]),
        _add_s16(f"{tag}_h_new", pre["h_new"]),
        _mul_s16(f"{tag}_{r_mul}", pre[r_mul]), _mul_s16(f"{tag}_z_diff", pre["z_diff"]),
        _table_input_s16(pre["z"]), _table_input_s16(pre["r"]), _table_input_s16(pre["n"]),
    ]
    return "{\n        " + ",\n        ".join(fields) + "\n    }"


# ---------------------------------------------------------------------------------------------------------
# Sizes (the same formulas as grukit_gru.c; the tests check the C functions return these)
# ---------------------------------------------------------------------------------------------------------


def _round4(n: int) -> int:
    return -(-n // 4) * 4


def _round8(n: int) -> int:
    return -(-n // 8) * 8


def buffer_sizes(qmodel) -> tuple[int, int]:
    """(state bytes, scratch bytes) the C model needs."""
    width = 1 if qmodel.scheme == "int8" else 2
    state = width * sum(layer.hidden_size for layer in qmodel.layers)
    top = qmodel.layers[-1].hidden_size
    if qmodel.scheme == "int8":
        scratch = [2 * max(_round8(l.input_size), _round8(l.hidden_size)) + 8 * _round4(l.hidden_size)
                   for l in qmodel.layers]
        if qmodel.head is not None:
            scratch.append(2 * _round8(top) + _round4(qmodel.head.fc.w_q.shape[0]))
    else:
        scratch = [2 * max(_round8(l.input_size), _round8(l.hidden_size)) + 12 * _round4(l.hidden_size)
                   for l in qmodel.layers]
        if qmodel.head is not None:
            scratch.append(2 * _round8(top) + 2 * _round4(qmodel.head.fc.w_q.shape[0]))
    return state, max(scratch)


def output_size(qmodel) -> int:
    return qmodel.head.fc.w_q.shape[0] if qmodel.head is not None else qmodel.layers[-1].hidden_size


# ---------------------------------------------------------------------------------------------------------
# export_c
# ---------------------------------------------------------------------------------------------------------


def _banner(qmodel, what: str) -> str:
    from grukit import __version__

    source = getattr(qmodel.float_model, "name", None) or "an unnamed model"
    return (f"/* GENERATED by grukit {__version__} from model '{source}' (scheme {qmodel.scheme}): {what}.\n"
            " * Do not edit; regenerate with grukit export MODEL --calib CALIB --c. */\n")


def _generate_model(qmodel, name: str) -> tuple[str, str, int]:
    s8 = qmodel.scheme == "int8"
    suffix = "s8" if s8 else "s16"
    cf = _CFile(name)
    layer_inits = [(_layer_s8 if s8 else _layer_s16)(cf, li, layer) for li, layer in enumerate(qmodel.layers)]
    head_init = "NULL"
    if qmodel.head is not None:
        head = (_fc_s8(cf, "head", [(qmodel.head.fc, qmodel.head.prepared)]) if s8
                else _fc_s16(cf, "head", [(qmodel.head.fc, qmodel.head.prepared)]))
        cf.chunks.append(f"static const grukit_fc_{suffix} {name}_head = {head};\n")
        head_init = f"&{name}_head"
    cf.chunks.append(
        f"static const grukit_gru_layer_{suffix} {name}_layers[{len(layer_inits)}] = {{\n    "
        + ",\n    ".join(layer_inits) + "\n};\n")
    per_step = int(bool(qmodel.per_step))
    cf.chunks.append(f"const grukit_model_{suffix} {name} = {{{len(layer_inits)}, {name}_layers, {head_init}, "
                     f"{per_step}}};\n")
    return suffix, "\n".join(cf.chunks), cf.flash_bytes


def _header(qmodel, name: str, suffix: str, flash_bytes: int) -> str:
    up = name.upper()
    state, scratch = buffer_sizes(qmodel)
    in_q, out_q = qmodel.input_q, qmodel.output_q
    ctype = "int8_t" if suffix == "s8" else "int16_t"
    act = qmodel.head.activation if qmodel.head is not None else "linear"
    lines = [
        f"#ifndef {up}_H", f"#define {up}_H", "", "#include <math.h>", "#include <stdint.h>", "",
        '#include "grukit_gru.h"', "",
        f"#define {up}_SCHEME_{suffix.upper()} 1",
        f"#define {up}_NUM_LAYERS {len(qmodel.layers)}",
        f"#define {up}_INPUT_SIZE {qmodel.layers[0].input_size}",
        f"#define {up}_OUTPUT_SIZE {output_size(qmodel)}",
        f"#define {up}_PER_STEP {int(bool(qmodel.per_step))} /* 1: y every step; 0: y after the last step */",
        f"#define {up}_STATE_BYTES {state}",
        f"#define {up}_SCRATCH_BYTES {scratch}",
        f"#define {up}_SCRATCH_WORDS {scratch // 4}",
        f"#define {up}_CONSTANT_BYTES {flash_bytes} /* weights, biases, parameters and tables */",
        "",
        "/* Input quantization (floats only at the model's edge): x_q = clamp(round_half_away(x / SCALE) + ZP). */",
        f"#define {up}_INPUT_SCALE {in_q.scale!r}f",
        f"#define {up}_INPUT_ZERO_POINT {in_q.zero_point}",
        f"#define {up}_INPUT_MIN {in_q.qmin}",
        f"#define {up}_INPUT_MAX {in_q.qmax}",
        f"/* Output: y = SCALE * (y_q - ZP), then the head's float activation ({act}). */",
        f"#define {up}_OUTPUT_SCALE {out_q.scale!r}f",
        f"#define {up}_OUTPUT_ZERO_POINT {out_q.zero_point}",
        "",
        f"typedef {ctype} {name}_value_t; /* the type of x, y and the state */",
        f"extern const grukit_model_{suffix} {name};",
        "",
        _quantize_input_function(name, up),
        f"#endif /* {up}_H */", "",
    ]
    return "\n".join(lines)


def _quantize_input_function(name: str, up: str) -> str:
    """C of ``<name>_quantize_input(float)``: the same integers as grukit's QParams.quantize."""
    return f"""/* Float -> model input, the same integers as grukit's QParams.quantize: x / SCALE in double (the float32
 * scale and x widen exactly, as NumPy's float64 division), rounded half away from zero (C99 round()), plus
 * the zero point, saturated to [MIN, MAX] while still a double (NaN gives MIN). Needs libm (-lm). */
static inline {name}_value_t {name}_quantize_input(float x)
{{
    double q = round((double)x / (double){up}_INPUT_SCALE) + (double){up}_INPUT_ZERO_POINT;
    if (!(q >= (double){up}_INPUT_MIN)) {{
        q = (double){up}_INPUT_MIN;
    }} else if (q > (double){up}_INPUT_MAX) {{
        q = (double){up}_INPUT_MAX;
    }}
    return ({name}_value_t)q;
}}
"""


def _example_main(qmodel, name: str, suffix: str) -> str:
    up = name.upper()
    return f"""#include <stdint.h>
#include <stdio.h>

#include "{name}.h"

/* The caller owns every byte the model uses: static, sized by the generated header. */
static {name}_value_t g_state[{up}_STATE_BYTES / sizeof({name}_value_t)];
static int32_t g_scratch[{up}_SCRATCH_WORDS];

/* Stands in for a sensor: a deterministic ramp in [-1, 1]. */
static float read_sample(int32_t t, int32_t i) {{ return (float)((t * 7 + i * 3) % 11 - 5) / 5.0f; }}

#ifndef EXAMPLE_STEPS
#define EXAMPLE_STEPS 20
#endif

int main(void)
{{
    {name}_value_t x_q[{up}_INPUT_SIZE];
    {name}_value_t y_q[{up}_OUTPUT_SIZE];
    if (grukit_model_{suffix}_init(&{name}, g_state, (int32_t)sizeof g_state, (int32_t)sizeof g_scratch) !=
        GRUKIT_OK) {{
        return 1;
    }}
    grukit_model_{suffix}_reset(&{name}, g_state); /* at the start of every independent sequence */
    for (int32_t t = 0; t < EXAMPLE_STEPS; ++t) {{
        for (int32_t i = 0; i < {up}_INPUT_SIZE; ++i) {{
            x_q[i] = {name}_quantize_input(read_sample(t, i)); /* from {name}.h, as grukit quantizes */
        }}
        /* A last-step model only needs y after the final sample: pass NULL before it to skip the head. */
        const int want_y = {up}_PER_STEP || t == EXAMPLE_STEPS - 1;
        grukit_model_{suffix}_step(&{name}, g_state, g_scratch, x_q, want_y ? y_q : NULL);
        if (want_y) {{
            printf("y %ld", (long)t);
            for (int32_t o = 0; o < {up}_OUTPUT_SIZE; ++o) {{
                printf(" %d", (int)y_q[o]); /* dequantize: {up}_OUTPUT_SCALE * (y_q - {up}_OUTPUT_ZERO_POINT) */
            }}
            printf("\\n");
        }}
    }}
    return 0;
}}
"""


def example_input(qmodel, steps: int = 20) -> np.ndarray:
    """The float samples the generated main.c feeds (its read_sample), [1, steps, I]."""
    I = qmodel.layers[0].input_size
    t, i = np.meshgrid(np.arange(steps), np.arange(I), indexing="ij")
    return (((t * 7 + i * 3) % 11 - 5) / np.float32(5.0)).astype(np.float32)[None]


def export_c(qmodel, out_dir, name: str = "grukit_model") -> list[Path]:
    """Write ``<name>.h``, ``<name>.c`` and an example ``main.c`` into out_dir; returns their paths.

    qmodel: a QuantizedGRUModel (``grukit.quantize``), scheme "int8" (fused _s8 kernel) or "16x8" (_s16).
    Compile the .c with firmware_ref/src/grukit_gru.c, grukit_ops.c, grukit_tables.c and
    -I firmware_ref/include -I firmware_ref/src; a program calling the header's ``<name>_quantize_input``
    (main.c does) links libm (-lm) for round().
    """
    if not name.isidentifier():
        raise BadInputError(f"name {name!r} must be a C identifier")
    if qmodel.scheme not in ("int8", "16x8"):
        raise UnsupportedModelError(f"scheme {qmodel.scheme!r} has no C kernel")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix, body, flash_bytes = _generate_model(qmodel, name)
    h_path, c_path, main_path = out / f"{name}.h", out / f"{name}.c", out / "main.c"
    h_path.write_text(_banner(qmodel, "model constants, declarations") + _header(qmodel, name, suffix, flash_bytes))
    c_path.write_text(_banner(qmodel, "model constants") + "#include <stddef.h>\n#include <stdint.h>\n\n"
                      f'#include "{name}.h"\n\n' + body)
    main_path.write_text(_banner(qmodel, "example streaming loop") + _example_main(qmodel, name, suffix))
    return [h_path, c_path, main_path]


def constant_bytes(qmodel) -> int:
    """Flash bytes of the generated constants (weights, biases, parameters, tables; structs excluded)."""
    return _generate_model(qmodel, "m")[2]
