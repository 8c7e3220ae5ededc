"""The fused C kernel in NumPy: grukit_gru.c function for function, and the kernel's Prepare.

``grukit_gru.c`` does not run the step graph op by op: it packs weights, tabulates, and requantizes in a
three-instruction SMMLAR form whose exactness rests on bounds. This module is the one Python definition of
that arithmetic, under the C names and widths:

- the C structs of ``grukit_gru.h`` as frozen records (``RequantS32``, ``FcS8``, ``AddTableS8``, ...,
  ``ModelS16``), filled by ``prepare_model(qmodel)``: the kernel's integer parameters derived from TFLite's,
  with every accumulator bounded from the real weights, biases and zero points (a model that could leave
  int32 is refused with UnsupportedModelError naming the op and row);
- the C functions as NumPy functions over a batch (``requant_fast_s32``, ``fc_s8``, ``add_tab_s8``,
  ``gru_step_s8``, ..., ``logistic_fast_s16``, ``gru_step_s16``), evaluating exactly what the C evaluates,
  in int64 arrays holding its int32 values;
- ``run_model(model, x_q)``: the whole model over sequences, as the C host runner does.

Every fully connected product is written dense or block-sparse (only its non-zero 4-row x 8-column groups,
``block_groups`` / ``group_index``), whichever takes fewer flash bytes (``weight_form``); ``prepare_model(qmodel,
sparse=False)`` keeps every product dense.

``grukit.firmware_ref.c_export`` writes these records as C; ``tests/test_firmware_kernel.py`` checks that
``run_model`` gives the NumPy runtime's integers (so the fused arithmetic is right before any C is
compiled) and ``tests/test_firmware_gru.py`` that the compiled C gives them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grukit.core import fixedpoint as F
from grukit.core import ops_int as K
from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, step_ops
from grukit.core.model import GATE_N, GATE_R, GATE_Z
from grukit.core.scheme import INT8

GATES = (("z", GATE_Z), ("r", GATE_R), ("n", GATE_N))
REQUANT_BOUND = 1 << 29  # |x| * 2^left_shift must stay below this (grukit_requant_s32's contract)
MAX_RIGHT_SHIFT = 30  # a larger right shift gives 0 on |y| < 2^29 just as 30 does, and 2^30 fits int32
PACKED_BOUND = 1 << 31  # |256 * accA + accB| must fit int32 (grukit_fc_s8)
ACC32_BOUND = 1 << 31  # a 16x8 dot product (bias excluded), shifted by its row's left_shift, must fit int32
START64_BOUND = 1 << 63  # the scaled 64-bit row value (start + dot * multiplier) must fit int64
# 16x8 element-wise requantizations take x with |x| <= 2^30, fed doubled: x is an int16 shifted by 15 (ADD/SUB
# input terms, in [-2^30, 2^30 - 2^15]), a product (MUL: input1 is a LOGISTIC output in [0, 32767], so
# |r * b| <= 32767 * 32768 < 2^30) or a sum of two terms checked below 2^30: 2x always fits int32.
S16_MAX_ABS_INPUT = 1 << 30
INT8_INPUTS = np.arange(-128, 128).astype(np.int8)

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


def check_graph(lbr: int) -> None:
    """Refuse (UnsupportedModelError) a step graph other than the one grukit_gru.c implements."""
    expected = {**_KERNEL_GRAPH, **_KERNEL_GRAPH_LBR[lbr]}
    for g, _ in GATES:
        expected.setdefault(f"gx_{g}", (FULLY_CONNECTED, ("x",)))
        if g != "n":
            expected[f"gh_{g}"] = (FULLY_CONNECTED, ("h",))
    got = {op.output: (op.kind, op.inputs) for op in step_ops(lbr)}
    if got != expected:
        raise UnsupportedModelError(
            f"the step graph (grukit.core.graph, linear_before_reset={lbr}) is not the one the C kernel "
            f"implements: {sorted(set(got.items()) ^ set(expected.items()))}")


# =========================================================================================================
# The structs of grukit_gru.h
# =========================================================================================================


@dataclass(frozen=True)
class RequantS32:
    """grukit_requant_s32: TFLite's double-rounding requantization + zero point on a doubled input."""

    multiplier: int
    rounding: int
    right_shift: int
    left_shift: int


@dataclass(frozen=True)
class RequantS64:
    """grukit_requant_s64: one 16x8 row's 64-bit requantization, bias and rounding in ``start``."""

    start: int
    multiplier: int
    right_shift: int
    left_shift: int


@dataclass(frozen=True)
class FcCompactS8:
    """grukit_fc_compact_s8: the size mode's product, a byte per weight and nine per row (in blocks of 4 rows:
    grukit_requant4_s8; the arrays below are per row, padded with zero rows to a multiple of 4)."""

    weights: np.ndarray  # int8 [rows * depth], each row's whole column quads stored as columns (0, 2, 1, 3)
    bias2: np.ndarray  # int32 [4 * ceil(rows / 4)], 2 (bias - input zp x sum of the row's weights)
    multiplier: np.ndarray  # int32
    shift: np.ndarray  # int8: left_shift if > 0, else -right_shift
    part_rows: int
    zero_point: tuple[int, int, int]


@dataclass(frozen=True)
class FcS8:
    """grukit_fc_s8 (``name``: the C symbol stem of its arrays). rows 0: no product. ``compact`` set: the size
    mode's form, the packed fields empty."""

    name: str
    rows: int
    depth: int
    weights: np.ndarray  # int32 words, packed pairs
    bias_start: np.ndarray  # int32 [2 per row pair]
    requant: tuple[RequantS32, ...]  # 4 * ceil(rows / 4), padding rows included
    input_offset: int
    general_requant: int
    block_groups: np.ndarray | None = None  # sparse form: uint8 [ceil(rows / 4)] stored groups per block
    group_index: np.ndarray | None = None  # sparse form: uint8 [stored groups], each one's k / 8
    compact: FcCompactS8 | None = None


@dataclass(frozen=True)
class AddTableS8:
    """grukit_add_table_s8: doubled input terms tabulated over int8 (index x + 128), but the unit input's (None:
    its doubled term is x << 20, its zero point folded into the other table)."""

    name: str
    input1_term2: np.ndarray | None  # int32 [256]
    input2_term2: np.ndarray | None  # int32 [256]
    output: RequantS32


@dataclass(frozen=True)
class AddFastS8:
    """grukit_add_fast_s8: the size mode's ADD / SUB, input terms computed instead of tabulated."""

    name: str
    input1_multiplier: int
    input2_multiplier: int
    input1_offset: int  # -zp * 2^21
    input2_offset: int
    output: RequantS32
    input1_shift: int  # right shift e
    input2_shift: int


@dataclass(frozen=True)
class MulFastS8:
    """grukit_mul_fast_s8."""

    input1_scale: int
    input1_offset_scaled: int
    input2_offset: int
    output: RequantS32


@dataclass(frozen=True)
class GruLayerS8:
    """grukit_gru_layer_s8 (``name``: "l<layer>", the stem of its arrays). Size mode: z_pre .. h_new are
    AddFastS8 (the C's ``adds`` array, its table fields NULL) and the products compact."""

    name: str
    input_size: int
    hidden_size: int
    linear_before_reset: int
    x_fc: FcS8
    h_fc: FcS8
    hn_fc: FcS8
    z_pre: AddTableS8 | AddFastS8
    r_pre: AddTableS8 | AddFastS8
    n_pre: AddTableS8 | AddFastS8
    h_minus_n: AddTableS8 | AddFastS8
    h_new: AddTableS8 | AddFastS8
    r_mul: MulFastS8
    z_mul: MulFastS8
    z_table: np.ndarray  # int8 [256], index x + 128
    r_table: np.ndarray
    n_table: np.ndarray

    @property
    def compact(self) -> bool:
        """Size mode: computed ADD / SUB, compact products, gate g at rows g * H."""
        return isinstance(self.z_pre, AddFastS8)


@dataclass(frozen=True)
class FcCompactS16:
    """grukit_fc_compact_s16: the size mode's 16x8 product, a byte per weight and 13 per row (each row's
    grukit_requant_s64 as its start split into words, the multiplier and one shift byte, in blocks of 4 rows:
    grukit_requant4_s16; the arrays below are per row, padded with zero rows to a multiple of 4)."""

    weights: np.ndarray  # int8 [rows * depth], as FcCompactS8.weights
    start_lo: np.ndarray  # uint32 [4 * ceil(rows / 4)]: start mod 2^32
    start_hi: np.ndarray  # int32: start >> 32
    multiplier: np.ndarray  # int32
    shift: np.ndarray  # int8: left_shift if > 0, else -right_shift


@dataclass(frozen=True)
class FcS16:
    """grukit_fc_s16. rows 0: no product."""

    name: str
    rows: int
    depth: int
    weights: np.ndarray  # int32 words, packed quads
    requant: tuple[RequantS64, ...]  # 4 * ceil(rows / 4), padding rows included; compact: rows, no padding
    block_groups: np.ndarray | None = None  # sparse form, as FcS8's
    group_index: np.ndarray | None = None
    compact: FcCompactS16 | None = None  # size mode (weights then empty, requant the rows' own)


@dataclass(frozen=True)
class AddFastS16:
    """grukit_add_fast_s16."""

    input1: RequantS32
    input2: RequantS32
    output: RequantS32
    input1_sign_mask: int
    input2_sign_mask: int


@dataclass(frozen=True)
class TableInputS16:
    """grukit_table_input_s16."""

    multiplier: int
    rounding: int
    right_shift: int


@dataclass(frozen=True)
class GruLayerS16:
    """grukit_gru_layer_s16."""

    name: str
    input_size: int
    hidden_size: int
    linear_before_reset: int
    x_fc: FcS16
    h_fc: FcS16
    hn_fc: FcS16
    z_pre: AddFastS16
    r_pre: AddFastS16
    n_pre: AddFastS16
    h_minus_n: AddFastS16
    h_new: AddFastS16
    r_mul: RequantS32
    z_mul: RequantS32
    z_act: TableInputS16
    r_act: TableInputS16
    n_act: TableInputS16

    @property
    def compact(self) -> bool:
        """Size mode: compact products, gate g at rows g * H."""
        return self.x_fc.compact is not None


@dataclass(frozen=True)
class DenseS8:
    """grukit_dense_s8: one dense layer of the head (``table``: the int8 [256] LOGISTIC / TANH table, or None)."""

    fc: FcS8
    act_min: int
    act_max: int
    table: np.ndarray | None


@dataclass(frozen=True)
class DenseS16:
    """grukit_dense_s16 (``act_op``: GRUKIT_ACT_NONE, _LOGISTIC or _TANH; ``act_input`` its table input)."""

    fc: FcS16
    act_min: int
    act_max: int
    act_op: int
    act_input: TableInputS16 | None


ACT_NONE, ACT_LOGISTIC, ACT_TANH = 0, 1, 2  # GRUKIT_ACT_* of grukit_gru.h


@dataclass(frozen=True)
class KernelModel:
    """grukit_model_s8 / grukit_model_s16: the layers, the head's dense layers (() without one) and per_step;
    ``c_suffix`` says which ("s8" or "s16")."""

    c_suffix: str
    layers: tuple
    head: tuple
    per_step: int


# =========================================================================================================
# Prepare: the kernel's parameters from TFLite's, with the bounds that make the C exact
# =========================================================================================================


def requant_s32(multiplier: int, shift: int, zero_point: int, abs_bound: int, what: str,
                max_abs_input: int = REQUANT_BOUND - 1) -> RequantS32:
    """grukit_requant_s32 for TFLite's (multiplier, shift) followed by + zero_point, valid for every input
    |x| <= abs_bound; raises UnsupportedModelError when an intermediate of the kernel's evaluation could
    leave int32 (see the header's contract).

    The right shift e is lowered to bit_length(y_bound) + 1 when larger: every |y| <= y_bound then rounds
    to 0 under both shifts, and the rounding constant zp * 2^e stays small. The left shift is max(shift, 0),
    which the bound keeps in [0, 28] (|x| >= 1 shifted by 29 reaches 2^29); for abs_bound 0 (every input is
    0, e.g. an all-zero row) it is 0, since there is nothing to scale. max_abs_input: the largest |x| shifted
    the caller's evaluation holds (2^29 - 1 for the int8 kernel; 16x8 passes 2^30, see requant_s32_16x8)."""
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
    return RequantS32(int(multiplier), rounding, e, left)


def _require_right_shift(q: RequantS32, what: str) -> None:
    if q.right_shift == 0:
        raise UnsupportedModelError(f"{what}: right shift 0 (an output scale at least half the input's); the "
                                    "C kernel's element-wise requantization needs a right shift")


def _require_no_left_shift(q: RequantS32, what: str, requant) -> None:
    if q.left_shift != 0:
        raise UnsupportedModelError(f"{what}: rescale must have shift <= 0, got {requant}")


def _offset_range(zero_point: int) -> int:
    """max |x - zp| over int8 x."""
    return max(127 - zero_point, zero_point + 128)


def _as_int32_words(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.int64)
    return np.where(values >= 1 << 31, values - (1 << 32), values)


def pack_pairs_s8(w: np.ndarray) -> np.ndarray:
    """int8 [O4, K] (O4 a multiple of 4) -> int32 words in grukit_fc_s8's layout: rows paired (B = 2p,
    A = 2p + 1), column k of a pair the int16 256 wA[k] + wB[k], two columns per word (the first in bits
    0-15), ordered [block of 4 rows][4-column group][pair][2 words]; the depth zero padded to 8."""
    o4, k = w.shape
    padded = np.zeros((o4, -(-k // 8) * 8), np.int64)
    padded[:, :k] = w
    halves = (256 * padded[1::2] + padded[0::2]) & 0xFFFF  # [pairs, K8]; exact int16 since |w| <= 127
    words = halves[:, 0::2] | (halves[:, 1::2] << 16)  # [pairs, K8 / 2]
    blocks, groups = o4 // 4, words.shape[1] // 2
    return _as_int32_words(words.reshape(blocks, 2, groups, 2).transpose(0, 2, 1, 3).ravel())


def pack_quads_s16(w: np.ndarray) -> np.ndarray:
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
    return _as_int32_words(words.ravel())


# --- the block-sparse form ---------------------------------------------------------------------------------
# A group is 4 rows x 8 columns, one iteration of the products' loops: 8 int32 words in both schemes' packings.
GROUP_ROWS, GROUP_COLUMNS, GROUP_WORDS = 4, 8, 8
SPARSE_MAX_GROUPS = 255  # block_groups and group_index are uint8: at most 255 groups (2,040 inputs) per row


def nonzero_groups(w: np.ndarray) -> np.ndarray:
    """bool [O4 / 4, ceil(K / 8)]: which groups of the stacked int8 weights [O4, K] (O4 a multiple of 4, each
    gate padded on its own) hold a non-zero weight."""
    o4, k = w.shape
    padded = np.zeros((o4, _round_up(k, GROUP_COLUMNS)), bool)
    padded[:, :k] = np.asarray(w) != 0
    return padded.reshape(o4 // GROUP_ROWS, GROUP_ROWS, -1, GROUP_COLUMNS).any(axis=(1, 3))


def dense_weight_bytes(nonzero: np.ndarray) -> int:
    """Flash bytes of the dense form's weights: 8 int32 words per group."""
    return 4 * GROUP_WORDS * int(nonzero.size)


def sparse_weight_bytes(nonzero: np.ndarray) -> int:
    """Flash bytes of the sparse form's arrays: 8 int32 words and a uint8 index per stored group, a uint8
    count per block (the bias starts and requantizations are the same in both forms)."""
    stored = int(nonzero.sum())
    return 4 * GROUP_WORDS * stored + stored + nonzero.shape[0]


def weight_form(packed: np.ndarray, w: np.ndarray, sparse: bool):
    """(weights, block_groups, group_index) of one product: the dense packed words and None, None; or, when
    sparse is allowed, the depth fits uint8 group indices and it takes fewer flash bytes, the stored groups'
    words (the dense layout's order, zero groups left out) with their per-block counts and column groups."""
    nonzero = nonzero_groups(w)
    if (not sparse or nonzero.shape[1] > SPARSE_MAX_GROUPS
            or sparse_weight_bytes(nonzero) >= dense_weight_bytes(nonzero)):
        return packed, None, None
    words = np.asarray(packed, np.int64).reshape(*nonzero.shape, GROUP_WORDS)[nonzero].ravel()
    block_groups = nonzero.sum(axis=1).astype(np.int64)
    group_index = np.nonzero(nonzero)[1].astype(np.int64)  # row-major: ascending within each block
    return words, block_groups, group_index


def _stacked_input_offset(name: str, parts: list) -> tuple[int, int]:
    """(input zero point, max |x - zp|) of stacked products, which must share their input's zero point."""
    offsets = {int(params.input_zero_point) for _, params in parts}
    if len(offsets) != 1:
        raise UnsupportedModelError(f"{name}: stacked gate products with different input zero points {offsets}")
    zp_in = offsets.pop()
    return zp_in, _offset_range(zp_in)


def _part_rows_s8(name: str, fc, params, reach: int, first: int) -> tuple[np.ndarray, np.ndarray, list]:
    """One stacked part's int8 weights (as int64), biases and each row's grukit_requant_s32, bounded by
    |bias| + reach sum |w| (rows named from ``first``)."""
    w = np.asarray(fc.w_q, np.int8).astype(np.int64)
    bias = np.zeros(w.shape[0], np.int64) if fc.bias_q is None else np.asarray(fc.bias_q, np.int64)
    bounds = np.abs(bias) + reach * np.abs(w).sum(axis=1)
    zp = params.output_zero_point
    requants = [requant_s32(m, s, zp, b, f"{name} row {first + o}")
                for o, (m, s, b) in enumerate(zip(params.output_multiplier, params.output_shift, bounds))]
    return w, bias, requants


def compact_shift(q: RequantS32) -> int:
    """grukit_fc_compact_s8's shift byte of a row's requantization (which never has both shifts)."""
    assert not (q.left_shift and q.right_shift)
    return q.left_shift if q.left_shift else -q.right_shift


def _swap_quad_middles(w: np.ndarray) -> np.ndarray:
    """[O, K] with columns 1 and 2 of every whole quad swapped, (0, 2, 1, 3): its own inverse."""
    w = np.asarray(w, np.int64).copy()
    quads = w.shape[1] // 4 * 4
    w[:, :quads] = w[:, :quads].reshape(w.shape[0], -1, 4)[..., [0, 2, 1, 3]].reshape(w.shape[0], quads)
    return w


def pack_compact_s8(w: np.ndarray) -> np.ndarray:
    """int8 [O, K] -> grukit_fc_compact_s8's bytes: row after row, each whole column quad as (0, 2, 1, 3)."""
    return _swap_quad_middles(w).ravel()


def _general_requant(requants) -> int:
    """grukit_fc_s8's general_requant (either form): 1 if some row has a left shift or right shift 0."""
    return int(any(q.left_shift or q.right_shift == 0 for q in requants))


def prepare_fc_s8(name: str, parts: list, sparse: bool = True, compact: bool = False) -> FcS8:
    """One grukit_fc_s8 stacking the (QuantizedFC, prepared params) parts, each padded to 4 rows; in the
    block-sparse form when ``sparse`` and it is smaller (weight_form). compact: the size mode's
    grukit_fc_compact_s8 instead (parts unpadded, the same requantizations)."""
    if compact:
        return _prepare_fc_compact_s8(name, parts)
    zp_in, reach = _stacked_input_offset(name, parts)
    weights, biases, requants = [], [], []
    depth = pad = 0
    for fc, params in parts:
        if (np.asarray(fc.w_q) == -128).any():
            raise UnsupportedModelError(f"{name}: weight -128 (the C kernel packs symmetric weights in [-127, 127])")
        w, bias, part_requants = _part_rows_s8(name, fc, params, reach, len(biases))
        requants += part_requants
        rows, depth = w.shape
        pad = -rows % 4
        weights.append(np.concatenate([w, np.zeros((pad, depth), np.int64)]))
        biases += [*bias.tolist(), *[0] * pad]
        requants += [RequantS32(0, 0, 1, 0)] * pad  # a padding row's output is 0
    w_all = np.concatenate(weights)
    bias2 = 2 * np.asarray(biases, np.int64)
    doubled = bias2 + 2 * reach * np.abs(w_all).sum(axis=1)  # bounds |2 (bias + dot)| per row
    packed = 256 * doubled[1::2] + doubled[0::2]
    if (packed >= PACKED_BOUND).any():
        row = 2 * int(np.argmax(packed >= PACKED_BOUND)) + 1
        raise UnsupportedModelError(
            f"{name} row {row}: |bias| + |x - zp| * sum |w| up to {int(doubled[row]) // 2} is too large for the "
            "C kernel's packed products (needs 256 x that, doubled, below 2^31)")
    start = np.stack([256 * bias2[1::2] + bias2[0::2], bias2[0::2]], axis=1).ravel()
    general = _general_requant(requants)
    weights, block_groups, group_index = weight_form(pack_pairs_s8(w_all), w_all, sparse)
    return FcS8(name, len(biases) - pad, depth, weights, start, tuple(requants), -zp_in, general, block_groups,
                group_index)


NO_FC_S8 = FcS8("", 0, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), (), 0, 0)


def _prepare_fc_compact_s8(name: str, parts: list) -> FcS8:
    """prepare_fc_s8's compact form: the rows of every part in a row, each requantized as the packed form's
    row (the same requant_s32 and bounds). The input offset is folded into the bias, 2 (bias - zp sum w), and
    the products read the raw int8 input (input_offset 0): the full sums are the packed form's, and every
    partial sum stays within 2 (|bias| + |zp| sum |w| + 128 sum |w|) <= 2 (|bias| + 2 reach sum |w|) < 2^31
    (reach >= 128, and requant_s32 keeps |bias| + reach sum |w| below 2^29)."""
    zp_in, reach = _stacked_input_offset(name, parts)
    weights, biases, requants, zero_points = [], [], [], []  # biases with the input offset folded in
    part_rows = {np.asarray(fc.w_q).shape[0] for fc, _ in parts}
    if len(part_rows) != 1 or len(parts) > 3:
        raise UnsupportedModelError(f"{name}: stacked parts of rows {sorted(part_rows)} (the compact form takes up "
                                    "to 3 parts of one size)")
    for fc, params in parts:
        w, bias, part_requants = _part_rows_s8(name, fc, params, reach, len(biases))
        requants += part_requants
        weights.append(w)
        biases += (bias - zp_in * w.sum(axis=1)).tolist()
        zero_points.append(int(params.output_zero_point))
    w_all = np.concatenate(weights)
    pad = [0] * (-len(biases) % 4)  # a padding row's record is all 0 (its output is never stored)
    compact = FcCompactS8(pack_compact_s8(w_all), 2 * np.array(biases + pad, np.int64),
                          np.array([q.multiplier for q in requants] + pad, np.int64),
                          np.array([compact_shift(q) for q in requants] + pad, np.int64), part_rows.pop(),
                          tuple(zero_points + [0] * (3 - len(zero_points))))
    empty = np.zeros(0, np.int64)
    return FcS8(name, len(biases), w_all.shape[1], empty, empty, tuple(requants), 0, _general_requant(requants),
                compact=compact)


ADD_INPUT_SHIFT = 20  # TFLite's int8 ADD / SUB left_shift, which grukit_add_fast_s8 hard-codes (doubled: 21)


def _unit_input(name: str, p) -> int:
    """Which input (1 or 2) of an ADD / SUB (AddParams) TFLite rescales by exactly 1/2: the one of the larger
    scale, the unit input every kernel path takes as a shift. Refused without one (grukit's quantizer always
    gives one; grukit_model_*_init returns GRUKIT_ERROR_BAD_CONSTANTS for such constants)."""
    for i, requant in ((1, p.input1), (2, p.input2)):
        if (requant.multiplier, requant.shift) == (1 << 30, 0):
            return i
    raise UnsupportedModelError(f"{name}: an ADD/SUB with no input of multiplier 1/2 (TFLite's larger scale)")


def _add_term_table(zero_point: int, left_shift: int, requant) -> np.ndarray:
    """An ADD / SUB input's term over every int8 input: (x - zp) << left_shift rescaled (TFLite's)."""
    shifted = (INT8_INPUTS.astype(np.int64) - zero_point) << left_shift
    return F.multiply_by_quantized_multiplier(shifted, requant.multiplier, requant.shift)


def prepare_add_s8(name: str, p) -> AddTableS8:
    """grukit_add_table_s8 of an int8 ADD or SUB (AddParams): the unit input (multiplier 1/2, shift 0, TFLite's
    larger input scale) untabulated, its doubled term (x - zp) << 20 checked on all 256 inputs, -zp << 20 (ADD)
    or +zp << 20 (SUB) folded into the other input's table."""
    t1 = _add_term_table(p.input1_zero_point, p.left_shift, p.input1)
    t2 = _add_term_table(p.input2_zero_point, p.left_shift, p.input2)
    bound = int(np.abs(t1).max() + np.abs(t2).max())
    q = requant_s32(p.output.multiplier, p.output.shift, p.output_zero_point, bound, f"{name} output")
    _require_no_left_shift(q, f"{name}: an ADD/SUB output", p.output)
    _require_right_shift(q, f"{name} output")
    unit = _unit_input(name, p)
    zp = p.input1_zero_point if unit == 1 else p.input2_zero_point
    if not np.array_equal(2 * (t1 if unit == 1 else t2), (INT8_INPUTS.astype(np.int64) - zp) << ADD_INPUT_SHIFT):
        raise UnsupportedModelError(f"{name}: the unit input's term is not (x - zp) << {ADD_INPUT_SHIFT - 1} "
                                    f"(left shift {p.left_shift}, the C kernel takes {ADD_INPUT_SHIFT})")
    fold = (1 if p.op == "SUB" else -1) * (int(zp) << ADD_INPUT_SHIFT)
    if unit == 1:
        return AddTableS8(name, None, 2 * t2 + fold, q)
    return AddTableS8(name, 2 * t1 + fold, None, q)


def prepare_add_fast_s8(name: str, p) -> AddFastS8:
    """grukit_add_fast_s8 of an int8 ADD or SUB (AddParams): each input's term computed in the SMMLAR form,
    checked equal to prepare_add_s8's table on all 256 inputs."""
    if p.left_shift != ADD_INPUT_SHIFT:
        raise UnsupportedModelError(f"{name}: left shift {p.left_shift} (the C kernel's computed ADD takes "
                                    f"{ADD_INPUT_SHIFT})")
    terms = []
    for i, (zp, requant) in enumerate(((p.input1_zero_point, p.input1), (p.input2_zero_point, p.input2)), 1):
        q = requant_s32(requant.multiplier, requant.shift, 0, _offset_range(zp) << ADD_INPUT_SHIFT,
                        f"{name} input{i}")
        _require_no_left_shift(q, f"{name}: input{i}", requant)
        offset = -int(zp) << (ADD_INPUT_SHIFT + 1)
        computed = add_term_s8(INT8_INPUTS, q.multiplier, offset, q.right_shift)
        tabulated = 2 * _add_term_table(zp, p.left_shift, requant)
        if not np.array_equal(computed, tabulated):
            x = int(np.argmax(computed != tabulated)) - 128
            raise UnsupportedModelError(f"{name} input{i}: the computed term differs from TFLite's at x = {x}")
        terms.append((q.multiplier, offset, q.right_shift, tabulated))
    (m1, off1, e1, t1), (m2, off2, e2, t2) = terms
    _unit_input(name, p)
    bound = int(np.abs(t1).max() + np.abs(t2).max()) // 2
    q = requant_s32(p.output.multiplier, p.output.shift, p.output_zero_point, bound, f"{name} output")
    _require_no_left_shift(q, f"{name}: an ADD/SUB output", p.output)
    _require_right_shift(q, f"{name} output")
    return AddFastS8(name, m1, m2, off1, off2, q, e1, e2)


def prepare_mul_s8(name: str, p) -> MulFastS8:
    """grukit_mul_fast_s8 of an int8 MUL (MulParams)."""
    bound = _offset_range(p.input1_zero_point) * _offset_range(p.input2_zero_point)
    q = requant_s32(p.output.multiplier, p.output.shift, p.output_zero_point, bound, f"{name} output")
    _require_right_shift(q, f"{name} output")
    scale = 2 << q.left_shift  # the doubling and the left shift, folded into the first factor
    return MulFastS8(scale, -p.input1_zero_point * scale, -p.input2_zero_point, q)


def activation_table_s8(kind: str, p) -> np.ndarray:
    """An int8 LOGISTIC / TANH over every int8 input: the spec kernel's own 256 outputs."""
    return (K.logistic_s8 if kind == LOGISTIC else K.tanh_s8)(INT8_INPUTS, p)


def _stacked_products(tag: str, layer, prepare_fc, no_fc, **form):
    """The layer's fully connected products as the kernels stack them: every gate over x; over h the gates
    that read h itself (all three for linear_before_reset = 1; z and r for 0, where gh_n reads r * h and is
    a product of its own, else no_fc). Each decides its own form (dense or block-sparse) from ``form``."""
    pre, fcs = layer.prepared, layer.fcs
    x_fc = prepare_fc(f"{tag}_gx", [(fcs[f"gx_{g}"], pre[f"gx_{g}"]) for g, _ in GATES], **form)
    h_gates = [g for g, _ in GATES if layer.linear_before_reset or g != "n"]
    h_fc = prepare_fc(f"{tag}_gh", [(fcs[f"gh_{g}"], pre[f"gh_{g}"]) for g in h_gates], **form)
    hn_fc = (no_fc if layer.linear_before_reset
             else prepare_fc(f"{tag}_gh_n", [(fcs["gh_n"], pre["gh_n"])], **form))
    return x_fc, h_fc, hn_fc


def prepare_layer_s8(li: int, layer, sparse: bool = True, compact: bool = False) -> GruLayerS8:
    """grukit_gru_layer_s8 of one QuantizedLayer (sparse: allow block-sparse products; compact: the size
    mode's computed ADD / SUB and compact products)."""
    check_graph(layer.linear_before_reset)
    pre, tag = layer.prepared, f"l{li}"
    r_mul = "r_gh" if layer.linear_before_reset else "r_h"
    x_fc, h_fc, hn_fc = _stacked_products(tag, layer, prepare_fc_s8, NO_FC_S8, sparse=sparse, compact=compact)
    prepare_add = prepare_add_fast_s8 if compact else prepare_add_s8
    adds = {name: prepare_add(f"{tag}_{name}", pre[name]) for name in ("z_pre", "r_pre", "n_pre", "h_minus_n",
                                                                       "h_new")}
    return GruLayerS8(tag, layer.input_size, layer.hidden_size, layer.linear_before_reset, x_fc, h_fc, hn_fc,
                      **adds, r_mul=prepare_mul_s8(f"{tag}_{r_mul}", pre[r_mul]),
                      z_mul=prepare_mul_s8(f"{tag}_z_diff", pre["z_diff"]),
                      z_table=activation_table_s8(LOGISTIC, pre["z"]), r_table=activation_table_s8(LOGISTIC, pre["r"]),
                      n_table=activation_table_s8(TANH, pre["n"]))


def requant_s64(multiplier: int, shift: int, bias: int, dot_bound: int, what: str) -> RequantS64:
    """grukit_requant_s64 of one 16x8 FULLY_CONNECTED row.

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
    return RequantS64(start, reduced << k, right, left)


def prepare_fc_s16(name: str, parts: list, clamped: bool = False, sparse: bool = True,
                   compact: bool = False) -> FcS16:
    """One grukit_fc_s16 stacking the (QuantizedFC, prepared params) parts, each padded to 4 rows. clamped: a
    head layer, whose fused activation's clamp the grukit_dense_s16 around it applies. Block-sparse when
    ``sparse`` and smaller (weight_form). compact: the size mode's form instead, the parts' rows in a row with
    no padding, a byte per weight (pack_compact_s8) and the same requantizations (every partial sum of a row
    is a sum of some of the terms requant_s64 bounded, in any order)."""
    weights, requants = [], []
    depth = pad = 0
    for fc, params in parts:
        if params.input_zero_point != 0 or params.output_zero_point != 0:
            raise UnsupportedModelError(f"{name}: a 16x8 product with a zero point (int16 tensors are symmetric)")
        if not clamped and (params.qmin, params.qmax) != (-32768, 32767):
            raise UnsupportedModelError(f"{name}: a fused activation clamp [{params.qmin}, {params.qmax}]")
        w = np.asarray(fc.w_q, np.int8).astype(np.int64)
        rows, depth = w.shape
        bias = np.zeros(rows, np.int64) if fc.bias_q is None else np.asarray(fc.bias_q, np.int64)
        dot_bounds = 32768 * np.abs(w).sum(axis=1)  # |x| <= 32768 for int16 x
        start = len(requants)
        requants += [requant_s64(int(m), int(s), int(b), int(d), f"{name} row {start + o}")
                     for o, (m, s, b, d) in enumerate(zip(params.output_multiplier, params.output_shift, bias,
                                                           dot_bounds))]
        pad = 0 if compact else -rows % 4
        weights.append(np.concatenate([w, np.zeros((pad, depth), np.int64)]))
        requants += [RequantS64(0, 0, 0, 0)] * pad  # a padding row's output is 0
    w_all = np.concatenate(weights)
    if compact:
        return FcS16(name, len(requants), depth, np.zeros(0, np.int64), tuple(requants),
                     compact=compact_form_s16(w_all, requants))
    words, block_groups, group_index = weight_form(pack_quads_s16(w_all), w_all, sparse)
    return FcS16(name, len(requants) - pad, depth, words, tuple(requants), block_groups, group_index)


def compact_form_s16(w: np.ndarray, requants: list) -> FcCompactS16:
    """grukit_fc_compact_s16 of int8 weights [O, K] and each row's grukit_requant_s64 (which never has both
    shifts: left_shift > 0 needs ts < 16, right_shift > 0 needs ts > 32)."""
    assert not any(q.left_shift and q.right_shift for q in requants)
    requants = [*requants, *[RequantS64(0, 0, 0, 0)] * (-len(requants) % 4)]  # a padding row's output is 0
    start = np.array([q.start for q in requants], np.int64)
    return FcCompactS16(pack_compact_s8(w), start & 0xFFFFFFFF, start >> 32,
                        np.array([q.multiplier for q in requants], np.int64),
                        np.array([q.left_shift if q.left_shift else -q.right_shift for q in requants], np.int64))


NO_FC_S16 = FcS16("", 0, 0, np.zeros(0, np.int64), ())


def requant_s32_16x8(requant, abs_bound: int, what: str, need_right_shift: bool) -> RequantS32:
    """A 16x8 element-wise grukit_requant_s32: inputs up to 2^30 (S16_MAX_ABS_INPUT)."""
    q = requant_s32(requant.multiplier, requant.shift, 0, abs_bound, what, max_abs_input=S16_MAX_ABS_INPUT)
    if need_right_shift:
        _require_right_shift(q, what)
    return q


def prepare_add_s16(name: str, p) -> AddFastS16:
    """grukit_add_fast_s16: each input's term rescales x << 15 (x fed doubled as x << 16); the larger input
    scale gives the multiplier 1/2 exactly, right shift 0, hence the sign masks (0 where no rounding)."""
    if (p.input1_zero_point, p.input2_zero_point, p.output_zero_point, p.left_shift) != (0, 0, 0, 15):
        raise UnsupportedModelError(f"{name}: a 16x8 ADD/SUB with zero points or left shift {p.left_shift}")
    if (p.qmin, p.qmax) != (-32768, 32767):
        raise UnsupportedModelError(f"{name}: a fused activation clamp [{p.qmin}, {p.qmax}]")
    extremes = np.array([-32768 << 15, 32767 << 15], np.int64)
    terms, bound = [], 0
    for i, requant in enumerate((p.input1, p.input2), 1):
        q = requant_s32_16x8(requant, 1 << 30, f"{name} input{i}", need_right_shift=False)
        _require_no_left_shift(q, f"{name}: input{i}", requant)
        terms.append(q)
        bound += int(np.abs(F.rescale_smaller_than_one(extremes, requant)).max())  # the term is monotone in x
    if bound >= S16_MAX_ABS_INPUT:
        raise UnsupportedModelError(f"{name}: input terms up to {bound} in sum reach 2^30 (input scales far apart)")
    _unit_input(name, p)
    out = requant_s32_16x8(p.output, bound, f"{name} output", need_right_shift=True)
    _require_no_left_shift(out, f"{name}: an ADD/SUB output", p.output)
    return AddFastS16(terms[0], terms[1], out, *(-1 if q.right_shift > 0 else 0 for q in terms))


def prepare_mul_s16(name: str, p) -> RequantS32:
    """The grukit_requant_s32 of a 16x8 MUL (whose input1 is z or r, a LOGISTIC output in [0, 32767])."""
    if (p.input1_zero_point, p.input2_zero_point, p.output_zero_point) != (0, 0, 0):
        raise UnsupportedModelError(f"{name}: a 16x8 MUL with zero points")
    if (p.qmin, p.qmax) != (-32768, 32767):
        raise UnsupportedModelError(f"{name}: a fused activation clamp [{p.qmin}, {p.qmax}]")
    q = requant_s32_16x8(p.output, 32767 * 32768, f"{name} output", need_right_shift=True)
    if q.left_shift != 0:
        raise UnsupportedModelError(f"{name}: a 16x8 MUL output rescale with a left shift ({p.output})")
    return q


def prepare_table_input_s16(p) -> TableInputS16:
    """grukit_table_input_s16: TFLite's power-of-two case (multiplier 0) resolved to 3 << shift, no shift."""
    multiplier, shift = int(p.input_multiplier), int(p.input_left_shift)
    if multiplier == 0:
        multiplier, shift = 3 << shift, 0
    return TableInputS16(multiplier, 1 << (shift - 1) if shift > 0 else 0, shift)


def prepare_layer_s16(li: int, layer, sparse: bool = True, compact: bool = False) -> GruLayerS16:
    """grukit_gru_layer_s16 of one QuantizedLayer (sparse: allow block-sparse products; compact: the size
    mode's compact products)."""
    check_graph(layer.linear_before_reset)
    pre, tag = layer.prepared, f"l{li}"
    r_mul = "r_gh" if layer.linear_before_reset else "r_h"
    x_fc, h_fc, hn_fc = _stacked_products(tag, layer, prepare_fc_s16, NO_FC_S16, sparse=sparse, compact=compact)
    adds = {name: prepare_add_s16(f"{tag}_{name}", pre[name]) for name in ("z_pre", "r_pre", "n_pre", "h_minus_n",
                                                                           "h_new")}
    return GruLayerS16(tag, layer.input_size, layer.hidden_size, layer.linear_before_reset, x_fc, h_fc, hn_fc,
                       **adds, r_mul=prepare_mul_s16(f"{tag}_{r_mul}", pre[r_mul]),
                       z_mul=prepare_mul_s16(f"{tag}_z_diff", pre["z_diff"]),
                       z_act=prepare_table_input_s16(pre["z"]), r_act=prepare_table_input_s16(pre["r"]),
                       n_act=prepare_table_input_s16(pre["n"]))


def prepare_dense_s8(name: str, dense, sparse: bool = True, compact: bool = False) -> DenseS8:
    """grukit_dense_s8 of one QuantizedDense: its product, its fused activation's clamp, its LOGISTIC / TANH."""
    table = None if dense.act_op is None else activation_table_s8(dense.act_op, dense.act_prepared)
    return DenseS8(prepare_fc_s8(name, [(dense.fc, dense.prepared)], sparse=sparse, compact=compact),
                   dense.prepared.qmin, dense.prepared.qmax, table)


def prepare_dense_s16(name: str, dense, sparse: bool = True, compact: bool = False) -> DenseS16:
    """grukit_dense_s16 of one QuantizedDense."""
    op = {None: ACT_NONE, LOGISTIC: ACT_LOGISTIC, TANH: ACT_TANH}[dense.act_op]
    act_input = None if dense.act_op is None else prepare_table_input_s16(dense.act_prepared)
    return DenseS16(prepare_fc_s16(name, [(dense.fc, dense.prepared)], clamped=True, sparse=sparse,
                                   compact=compact),
                    dense.prepared.qmin, dense.prepared.qmax, op, act_input)


OPTIMIZE = ("speed", "size")  # grukit export --c / deploy --optimize: the kernel's two forms


def check_optimize(optimize: str) -> None:
    """Refuse (BadInputError) an unknown mode."""
    if optimize not in OPTIMIZE:
        raise BadInputError(f"--optimize {optimize!r}: expected one of {', '.join(OPTIMIZE)}")


def prepare_model(qmodel, sparse: bool = True, optimize: str = "speed") -> KernelModel:
    """The kernel's constants for a QuantizedGRUModel (``grukit.core.quantized``). sparse: each product
    (x_fc, h_fc, hn_fc of every layer, every head layer) takes the block-sparse form where that needs fewer
    flash bytes; False keeps every product dense (to compare both on one model). optimize "size": every product
    compact and (int8) the ADD / SUB terms computed (sparse does not apply)."""
    check_optimize(optimize)
    s8 = qmodel.scheme is INT8
    form = {"sparse": sparse, **({"compact": True} if optimize == "size" else {})}
    prepare_layer, prepare_dense = (prepare_layer_s8, prepare_dense_s8) if s8 else (prepare_layer_s16,
                                                                                    prepare_dense_s16)
    layers = tuple(prepare_layer(li, layer, **form) for li, layer in enumerate(qmodel.layers))
    dense = () if qmodel.head is None else qmodel.head.layers
    head = tuple(prepare_dense("head" if len(dense) == 1 else f"head{k}", d, **form) for k, d in enumerate(dense))
    return KernelModel(qmodel.scheme.c_suffix, layers, head, int(bool(qmodel.per_step)))


# =========================================================================================================
# The C functions, over a batch (int64 arrays holding the C's int32 values)
# =========================================================================================================


def _check_s32(values: np.ndarray, what: str) -> np.ndarray:
    """The C holds ``values`` in an int32: refuse (OverflowError) what would overflow there."""
    if values.size and (values.min() < -(1 << 31) or values.max() >= 1 << 31):
        raise OverflowError(f"{what}: int32 overflow in the C kernel ({values.min()}..{values.max()})")
    return values


def shl_s32(x, shift: int) -> np.ndarray:
    """shl_s32: a left shift through uint32, wrapping like the C (the generator's bounds prevent wraps)."""
    return F.wrap_int32(np.asarray(x, np.int64) << shift)


def sat_s8(x) -> np.ndarray:
    return np.clip(x, -128, 127)


def sat_s16(x) -> np.ndarray:
    return np.clip(x, -32768, 32767)


def mul_high_rounded_acc_s32(x, multiplier: int, acc) -> np.ndarray:
    """mul_high_rounded_acc_s32 (SMMLAR): acc + x * multiplier / 2^32 rounded half up."""
    return np.asarray(acc, np.int64) + ((np.asarray(x, np.int64) * multiplier + (1 << 31)) >> 32)


def requant_fast_s32(x2, multiplier: int, rounding: int, right_shift: int) -> np.ndarray:
    """requant_fast_s32: TFLite's requantization + zero point of x = x2 / 2 (right_shift >= 1)."""
    x2 = np.asarray(x2, np.int64)
    y = mul_high_rounded_acc_s32(x2, multiplier, rounding)
    return (y + (x2 >> 31)) >> right_shift


def requant_general_s32(x2, q: RequantS32) -> np.ndarray:
    """requant_general_s32: any row, a left shift first (and no sign term when right_shift is 0)."""
    shifted = shl_s32(x2, q.left_shift)
    y = mul_high_rounded_acc_s32(shifted, q.multiplier, q.rounding)
    return (y + ((shifted >> 31) if q.right_shift > 0 else 0)) >> q.right_shift


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def widen_s8(x: np.ndarray, offset: int) -> np.ndarray:
    """widen_s8: 2 (x + offset) per column [N, K8], the padding columns 0 (the C packs pairs into words)."""
    n, k = x.shape
    xw = np.zeros((n, _round_up(k, 8)), np.int64)
    xw[:, :k] = 2 * (x.astype(np.int64) + offset)
    return xw


def _pairs_from_words(words: np.ndarray, blocks: int, k8: int) -> tuple[np.ndarray, np.ndarray]:
    """From packed words [blocks][k8 / 4 column quads][pair][word]: per row pair, the halfwords 256 wA + wB and
    their low bytes wB, [blocks * 2, k8]."""
    words = np.asarray(words, np.int64).reshape(blocks, k8 // 4, 2, 2)  # [block][quad][pair][word]
    words = words.transpose(0, 2, 1, 3).reshape(blocks * 2, k8 // 2)  # [pair][word]
    low, high = (words << 48) >> 48, words >> 16  # the two int16 halves of each int32 word
    halves = np.stack([low, high], axis=-1).reshape(blocks * 2, k8)
    return halves, (halves << 56) >> 56  # SXTB16: the low byte of each half, sign extended


def _unpack_pairs(fc: FcS8) -> tuple[np.ndarray, np.ndarray]:
    """A dense product's packed words: per row pair, the halfwords 256 wA + wB and their low bytes wB,
    [pairs, K8]."""
    return _pairs_from_words(fc.weights, _round_up(fc.rows, 4) // 4, _round_up(fc.depth, 8))


def _sparse_groups(fc):
    """dot_block_sparse_*'s iteration: (block, stored group s, its column group) in the kernel's order."""
    s = 0
    for block, count in enumerate(np.asarray(fc.block_groups, np.int64)):
        for group in fc.group_index[s:s + count]:
            yield block, s, int(group)
            s += 1


def _pair_sums_sparse_s8(fc: FcS8, xw: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fc_sparse_s8's accumulators (packed, B) [N, pairs]: each block's stored groups added in order, the
    input columns of each group's index; every partial sum checked to fit int32 as the C holds it."""
    halves, low_bytes = _pairs_from_words(fc.weights, len(fc.group_index), GROUP_COLUMNS)  # [stored * 2, 8]
    acc_packed = np.repeat(start[None, :, 0], xw.shape[0], axis=0)
    acc_b = np.repeat(start[None, :, 1], xw.shape[0], axis=0)
    for block, s, group in _sparse_groups(fc):
        x_group = xw[:, GROUP_COLUMNS * group:GROUP_COLUMNS * (group + 1)]
        pairs, stored = slice(2 * block, 2 * block + 2), slice(2 * s, 2 * s + 2)
        acc_packed[:, pairs] = _check_s32(acc_packed[:, pairs] + x_group @ halves[stored].T,
                                          f"{fc.name} packed accumulator")  # SMLAD
        acc_b[:, pairs] = _check_s32(acc_b[:, pairs] + x_group @ low_bytes[stored].T,
                                     f"{fc.name} accumulator")  # SMLAD of SXTB16
    return acc_packed, acc_b


def requant_compact_s32(x2, multiplier: int, shift: int, zero_point: int) -> np.ndarray:
    """requant_compact_s32: a left shift and the zero point as rounding (shift >= 0), or requant_fast_s32."""
    if shift >= 0:
        return mul_high_rounded_acc_s32(shl_s32(x2, shift), multiplier, zero_point)
    e = -shift
    return requant_fast_s32(x2, multiplier, (1 << (e - 1)) + int(shl_s32(zero_point, e)), e)


def unpack_compact_s8(weights: np.ndarray, rows: int, depth: int) -> np.ndarray:
    """The int8 weights [rows, depth] of a compact product's bytes (pack_compact_s8 undone)."""
    return _swap_quad_middles(np.asarray(weights, np.int64).reshape(rows, depth))


def fc_compact_s8(fc: FcS8, xw: np.ndarray) -> np.ndarray:
    """fc_compact_s8 over a batch: widened xw [N, K8] -> int8 [N, rows]."""
    c = fc.compact
    w = unpack_compact_s8(c.weights, fc.rows, fc.depth)
    bias2 = np.asarray(c.bias2[: fc.rows], np.int64)
    # every partial sum is a partial sum of the bounded terms: the full sums' check covers the C's int32
    acc = _check_s32(bias2 + xw[:, : fc.depth] @ w.T, f"{fc.name} accumulator")
    out = np.empty_like(acc)
    for o in range(fc.rows):
        out[:, o] = requant_compact_s32(acc[:, o], int(c.multiplier[o]), int(c.shift[o]),
                                        c.zero_point[o // c.part_rows])
    return sat_s8(out)


def fc_s8(fc: FcS8, x: np.ndarray) -> np.ndarray:
    """fc_s8 over a batch: int8 x [N, depth] -> int8 [N, 4 * ceil(rows / 4)] (padding rows included); the
    block-sparse form (fc_sparse_s8) when fc.block_groups is set; the compact form [N, rows] when fc.compact."""
    xw = widen_s8(x, fc.input_offset)
    if fc.compact is not None:
        return fc_compact_s8(fc, xw)
    start = np.asarray(fc.bias_start, np.int64).reshape(-1, 2)  # per pair: packed start, B start
    if fc.block_groups is not None:
        acc_packed, acc_b = _pair_sums_sparse_s8(fc, xw, start)
    else:
        halves, low_bytes = _unpack_pairs(fc)
        acc_packed = _check_s32(start[:, 0] + xw @ halves.T, f"{fc.name} packed accumulator")  # SMLAD
        acc_b = _check_s32(start[:, 1] + xw @ low_bytes.T, f"{fc.name} accumulator")  # SMLAD of SXTB16
    acc_a = (acc_packed >> 8) - (acc_b >> 8)  # the floors of dotB / 256 cancel
    acc = np.stack([acc_b, acc_a], axis=-1).reshape(x.shape[0], -1)  # rows B0, A0, B1, A1, ...
    out = np.empty_like(acc)
    for o, q in enumerate(fc.requant):
        col = acc[:, o]
        out[:, o] = (requant_general_s32(col, q) if fc.general_requant
                     else requant_fast_s32(col, q.multiplier, q.rounding, q.right_shift))
    return sat_s8(out)


def _table_terms_s8(p: AddTableS8, a, b) -> tuple[np.ndarray, np.ndarray]:
    """The two doubled terms of grukit_add_table_s8: the unit input's x << 20, the other's from its table."""
    unit = lambda x: np.asarray(x, np.int64) << ADD_INPUT_SHIFT  # noqa: E731
    if p.input1_term2 is None:
        return unit(a), p.input2_term2[np.asarray(b) + 128]
    return p.input1_term2[np.asarray(a) + 128], unit(b)


def add_tab_s8(p: AddTableS8, a, b) -> np.ndarray:
    q, (t1, t2) = p.output, _table_terms_s8(p, a, b)
    return sat_s8(requant_fast_s32(t1 + t2, q.multiplier, q.rounding, q.right_shift))


def sub_tab_s8(p: AddTableS8, a, b) -> np.ndarray:
    q, (t1, t2) = p.output, _table_terms_s8(p, a, b)
    return sat_s8(requant_fast_s32(t1 - t2, q.multiplier, q.rounding, q.right_shift))


def add_term_s8(x, multiplier: int, offset: int, e: int) -> np.ndarray:
    """add_term_s8: a computed ADD / SUB input term, doubled (no rounding or sign term for e = 0)."""
    x2 = shl_s32(x, ADD_INPUT_SHIFT + 1) + offset
    if e == 0:
        return 2 * mul_high_rounded_acc_s32(x2, multiplier, 0)
    return 2 * requant_fast_s32(x2, multiplier, 1 << (e - 1), e)


def _calc_terms_s8(p: AddFastS8, a, b) -> tuple[np.ndarray, np.ndarray]:
    return (add_term_s8(a, p.input1_multiplier, p.input1_offset, p.input1_shift),
            add_term_s8(b, p.input2_multiplier, p.input2_offset, p.input2_shift))


def add_calc_s8(p: AddFastS8, a, b) -> np.ndarray:
    t1, t2 = _calc_terms_s8(p, a, b)
    return sat_s8(requant_fast_s32(t1 + t2, p.output.multiplier, p.output.rounding, p.output.right_shift))


def sub_calc_s8(p: AddFastS8, a, b) -> np.ndarray:
    t1, t2 = _calc_terms_s8(p, a, b)
    return sat_s8(requant_fast_s32(t1 - t2, p.output.multiplier, p.output.rounding, p.output.right_shift))


def mul_fast_s8(p: MulFastS8, a, b) -> np.ndarray:
    q = p.output
    product2 = (np.asarray(a, np.int64) * p.input1_scale + p.input1_offset_scaled) * (np.asarray(b, np.int64)
                                                                                     + p.input2_offset)
    return sat_s8(requant_fast_s32(product2, q.multiplier, q.rounding, q.right_shift))


def gru_step_s8(layer: GruLayerS8, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """grukit_gru_step_s8 over a batch: int8 x [N, I], h [N, H] -> the new h [N, H] (int64 values)."""
    H = layer.hidden_size
    stride = H if layer.compact else _round_up(H, 4)
    add, sub = (add_calc_s8, sub_calc_s8) if layer.compact else (add_tab_s8, sub_tab_s8)
    gx, gh = fc_s8(layer.x_fc, x), fc_s8(layer.h_fc, h)
    gate = lambda acc, g: acc[:, g * stride : g * stride + H]  # noqa: E731
    h = np.asarray(h, np.int64)
    z = layer.z_table[add(layer.z_pre, gate(gx, 0), gate(gh, 0)) + 128].astype(np.int64)
    r = layer.r_table[add(layer.r_pre, gate(gx, 1), gate(gh, 1)) + 128].astype(np.int64)
    if layer.linear_before_reset:
        gh_n = gate(gh, 2)
        n_in = mul_fast_s8(layer.r_mul, r, gh_n)
    else:  # gh_n = R_n (r * h) needs every r first
        n_in = fc_s8(layer.hn_fc, mul_fast_s8(layer.r_mul, r, h))[:, :H]
    n = layer.n_table[add(layer.n_pre, gate(gx, 2), n_in) + 128].astype(np.int64)
    diff = sub(layer.h_minus_n, h, n)
    return add(layer.h_new, n, mul_fast_s8(layer.z_mul, z, diff))


def _quads_from_words(words: np.ndarray, blocks: int, k8: int) -> np.ndarray:
    """From packed words [blocks][k8 / 4 column quads][row]: the int8 weights [blocks * 4, k8] (bytes hold
    columns 0, 2, 1, 3)."""
    words = np.asarray(words, np.int64).reshape(blocks, k8 // 4, 4)  # [block][quad][row]
    quads = np.stack([(words << (56 - 8 * i)) >> 56 for i in range(4)], axis=-1)[..., [0, 2, 1, 3]]
    return quads.transpose(0, 2, 1, 3).reshape(blocks * 4, k8)


def _unpack_quads(fc: FcS16) -> np.ndarray:
    """A dense product's packed words: the int8 weights [4 * ceil(rows / 4), K8]."""
    return _quads_from_words(fc.weights, _round_up(fc.rows, 4) // 4, _round_up(fc.depth, 8))


def requant_row_s16(dot, q: RequantS64) -> np.ndarray:
    """requant_row_s16: start + (dot << left_shift) * multiplier in int64 (one SMLAL), the high word shifted."""
    v = q.start + shl_s32(dot, q.left_shift) * q.multiplier  # |v| < 2^63: requant_s64 proved it
    return sat_s16((v >> 32) >> q.right_shift)


def requant_compact_s16(dot, c: FcCompactS16) -> np.ndarray:
    """requant_compact_s16 of dot products [N, rows]: requant_row_s16 with the record's start from its words."""
    rows = dot.shape[1]
    shift = c.shift[:rows]
    start = (c.start_hi[:rows] << 32) | c.start_lo[:rows]
    v = start + shl_s32(dot, np.maximum(shift, 0)) * c.multiplier[:rows]  # |v| < 2^63 (requant_s64)
    return sat_s16((v >> 32) >> np.maximum(-shift, 0))


def _dot_sparse_s16(fc: FcS16, xp: np.ndarray) -> np.ndarray:
    """dot_block_sparse_s16 over every block [N, 4 * blocks]: each block's stored groups added in order, every
    partial sum checked to fit int32."""
    w = _quads_from_words(fc.weights, len(fc.group_index), GROUP_COLUMNS)  # [stored * 4, 8]
    dot = np.zeros((xp.shape[0], 4 * len(fc.block_groups)), np.int64)
    for block, s, group in _sparse_groups(fc):
        rows = slice(4 * block, 4 * block + 4)
        x_group = xp[:, GROUP_COLUMNS * group:GROUP_COLUMNS * (group + 1)]
        dot[:, rows] = _check_s32(dot[:, rows] + x_group @ w[4 * s:4 * s + 4].T, f"{fc.name} dot product")
    return dot


def fc_s16(fc: FcS16, x: np.ndarray) -> np.ndarray:
    """fc_s16 over a batch: int16 x [N, depth] -> int16 [N, 4 * ceil(rows / 4)] (padding rows give 0); the
    block-sparse form when fc.block_groups is set; the compact form [N, rows] when fc.compact is."""
    if fc.compact is not None:
        c = fc.compact
        dot = _check_s32(np.asarray(x, np.int64) @ unpack_compact_s8(c.weights, fc.rows, fc.depth).T,
                         f"{fc.name} dot product")
        return requant_compact_s16(dot, c)
    k8 = _round_up(fc.depth, 8)
    xp = np.zeros((x.shape[0], k8), np.int64)
    xp[:, : fc.depth] = x
    if fc.block_groups is not None:
        dot = _dot_sparse_s16(fc, xp)
    else:
        w = _unpack_quads(fc)
        dot = _check_s32(xp @ w.T, f"{fc.name} dot product")  # SMLAD
    return np.stack([requant_row_s16(dot[:, o], q) for o, q in enumerate(fc.requant)], axis=1)


def add_term_s16(q: RequantS32, sign_mask: int, x) -> np.ndarray:
    """An ADD/SUB input term on the doubled input x << 16."""
    x2 = shl_s32(x, 16)
    return (mul_high_rounded_acc_s32(x2, q.multiplier, q.rounding) + ((x2 >> 31) & sign_mask)) >> q.right_shift


def add_fast_s16(p: AddFastS16, a, b) -> np.ndarray:
    raw = add_term_s16(p.input1, p.input1_sign_mask, a) + add_term_s16(p.input2, p.input2_sign_mask, b)
    return sat_s16(requant_fast_s32(2 * raw, p.output.multiplier, p.output.rounding, p.output.right_shift))


def sub_fast_s16(p: AddFastS16, a, b) -> np.ndarray:
    raw = add_term_s16(p.input1, p.input1_sign_mask, a) - add_term_s16(p.input2, p.input2_sign_mask, b)
    return sat_s16(requant_fast_s32(2 * raw, p.output.multiplier, p.output.rounding, p.output.right_shift))


def mul_fast_s16(q: RequantS32, a, b) -> np.ndarray:
    """a in [0, 32767] (a LOGISTIC output), b int16: |2 a b| < 2^31."""
    return sat_s16(requant_fast_s32(2 * np.asarray(a, np.int64) * b, q.multiplier, q.rounding, q.right_shift))


def table_input_s16(p: TableInputS16, x) -> np.ndarray:
    return (np.asarray(x, np.int64) * p.multiplier + p.rounding) >> p.right_shift


def sigmoid_abs(abs_v, fraction_bits: int, saturated: int) -> np.ndarray:
    """sigmoid(|v| / 2^fraction_bits / 24) interpolated in the table, unsigned Q0.(16 + fraction_bits)."""
    index = np.minimum(abs_v >> fraction_bits, 254)
    lo, hi = K.SIGMOID_TABLE_U16[index], K.SIGMOID_TABLE_U16[index + 1]
    value = (lo << fraction_bits) + (abs_v & ((1 << fraction_bits) - 1)) * (hi - lo)
    return np.where(abs_v >> fraction_bits >= 255, saturated, value)


def logistic_fast_s16(p: TableInputS16, x) -> np.ndarray:
    """TFLite's int16 LOGISTIC: 9 interpolation bits, sigmoid(-v) = 1 - sigmoid(v), rounded to Q0.15."""
    v = table_input_s16(p, x)
    s_q25 = sigmoid_abs(np.abs(v), 9, 0x7FFF << 10)
    return np.where(v >= 0, s_q25 + (1 << 9), (1 << 25) - s_q25 + (1 << 9) - 1) >> 10


def tanh_fast_s16(p: TableInputS16, x) -> np.ndarray:
    """TFLite's int16 TANH = 2 sigmoid(2v) - 1: 8 interpolation bits, rounded to Q0.15."""
    v = table_input_s16(p, x)
    s_q24 = sigmoid_abs(np.abs(v), 8, 0xFFFF << 8)
    return np.where(v >= 0, s_q24 - (1 << 23) + (1 << 7), -s_q24 + (1 << 23) + (1 << 7) - 1) >> 8


def gru_step_s16(layer: GruLayerS16, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """grukit_gru_step_s16 over a batch: int16 x [N, I], h [N, H] -> the new h [N, H] (int64 values)."""
    H = layer.hidden_size
    stride = H if layer.compact else _round_up(H, 4)
    gx, gh = fc_s16(layer.x_fc, x), fc_s16(layer.h_fc, h)
    gate = lambda acc, g: acc[:, g * stride : g * stride + H]  # noqa: E731
    h = np.asarray(h, np.int64)
    z = logistic_fast_s16(layer.z_act, add_fast_s16(layer.z_pre, gate(gx, 0), gate(gh, 0)))
    r = logistic_fast_s16(layer.r_act, add_fast_s16(layer.r_pre, gate(gx, 1), gate(gh, 1)))
    if layer.linear_before_reset:
        n_in = mul_fast_s16(layer.r_mul, r, gate(gh, 2))
    else:  # gh_n = R_n (r * h) needs every r first
        n_in = fc_s16(layer.hn_fc, mul_fast_s16(layer.r_mul, r, h))[:, :H]
    n = tanh_fast_s16(layer.n_act, add_fast_s16(layer.n_pre, gate(gx, 2), n_in))
    diff = sub_fast_s16(layer.h_minus_n, h, n)
    return add_fast_s16(layer.h_new, n, mul_fast_s16(layer.z_mul, z, diff))


def head_s8(head: tuple, x: np.ndarray) -> np.ndarray:
    """grukit_model_s8_output's head: each dense layer's product, clamp and table."""
    for dense in head:
        y = np.clip(fc_s8(dense.fc, x)[:, : dense.fc.rows], dense.act_min, dense.act_max)
        x = y if dense.table is None else dense.table[y + 128].astype(np.int64)
    return x


def head_s16(head: tuple, x: np.ndarray) -> np.ndarray:
    """grukit_model_s16_output's head: each dense layer's product, clamp and LOGISTIC / TANH."""
    for dense in head:
        y = np.clip(fc_s16(dense.fc, x)[:, : dense.fc.rows], dense.act_min, dense.act_max)
        act = {ACT_NONE: lambda p, v: v, ACT_LOGISTIC: logistic_fast_s16, ACT_TANH: tanh_fast_s16}[dense.act_op]
        x = act(dense.act_input, y)
    return x


def run_model(model: KernelModel, x_q: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """grukit_model_*_step over sequences x_q [N, T, I] from zero states, as the C host runner: (y [N, O]
    after the last step, or [N, T, O] every step for a per-step model; [each layer's states [N, T, H]])."""
    s8 = model.c_suffix == "s8"
    step, head = (gru_step_s8, head_s8) if s8 else (gru_step_s16, head_s16)
    n, t, _ = x_q.shape
    states = [np.zeros((n, layer.hidden_size), np.int64) for layer in model.layers]
    seqs = [np.empty((n, t, layer.hidden_size), np.int64) for layer in model.layers]
    ys = []
    for ti in range(t):
        inp = x_q[:, ti].astype(np.int64)
        for li, layer in enumerate(model.layers):
            states[li] = step(layer, inp, states[li])
            seqs[li][:, ti] = inp = states[li]
        if model.per_step or ti == t - 1:
            ys.append(head(model.head, inp) if model.head else inp)
    y = np.stack(ys, axis=1) if model.per_step else ys[-1]
    return y, seqs
