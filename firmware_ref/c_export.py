"""``export_c(qmodel, out_dir)``: a quantized GRU as C constants for firmware_ref's fused kernel.

Writes ``<name>.h`` / ``<name>.c`` (every weight, bias, multiplier, shift, zero point and table of the model,
as the structs of ``firmware_ref/include/grukit_gru.h``; the header also holds ``<name>_quantize_input``,
the float -> integer input step giving QParams.quantize's integers) and an example ``main.c`` with the
streaming loop. ``export_c_library`` writes them as a self-contained library folder with the kernel's
sources, a CMakeLists.txt, an arm-none-eabi toolchain file and PlatformIO / Arduino manifests. The files start with a banner naming grukit's version, the model and the scheme, and hold no
date: the same model always gives the same bytes.

What goes into the structs is decided by ``grukit.firmware_ref.kernel.prepare_model`` (the kernel's own
Prepare: packed weights, tables, the SMMLAR-form requantizations, and the bounds that make them exact;
each product dense or block-sparse, whichever is smaller); this module only writes those records as C.
``sparse=False`` (every writer and ``constant_bytes``) keeps every product dense; ``optimize="size"`` writes the
kernel's size form (compact products; for int8 also computed ADD / SUB).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.scheme import INT8, SCHEMES
from grukit.core.version import __version__
from grukit.firmware_ref.build import firmware_dir
from grukit.firmware_ref.kernel import (AddFastS8, AddFastS16, AddTableS8, DenseS8, DenseS16, FcS8, FcS16,
                                        GruLayerS8, GruLayerS16, MulFastS8, RequantS32, TableInputS16, prepare_model)

# The kernel compiled for one form of the constants only (grukit_gru.h): what a firmware of that form builds
# (the generated library's CMakeLists.txt and library.json pass it).
FORM_ONLY_DEFINE = {"speed": "GRUKIT_FORM_SPEED_ONLY", "size": "GRUKIT_FORM_SIZE_ONLY"}
REQUANT4_S8_BYTES = 36  # sizeof(grukit_requant4_s8): 4 rows' requantizations
REQUANT4_S16_BYTES = 52  # sizeof(grukit_requant4_s16)
ADD_FAST_S8_BYTES = 36  # sizeof(grukit_add_fast_s8): its parameters stand where the speed form's tables are


class _CFile:
    """Accumulates named constant arrays and struct initializers of one generated .c file."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.chunks: list[str] = []
        self.flash_bytes = 0

    def requants(self, name: str, requants: list) -> str:
        """A grukit_requant_s32 array, one {multiplier, rounding, right_shift, left_shift} per row."""
        sym = f"{self.prefix}_{name}"
        body = ",\n    ".join(_requant_init(q) for q in requants)
        self.chunks.append(f"static const grukit_requant_s32 {sym}[{len(requants)}] = {{\n    {body}\n}};\n")
        self.flash_bytes += 16 * len(requants)
        return sym

    def requants_s64(self, name: str, requants: list) -> str:
        """A grukit_requant_s64 array, one {start, multiplier, right_shift, left_shift} per row."""
        sym = f"{self.prefix}_{name}"
        body = ",\n    ".join(f"{{{_i64_literal(q.start)}, {q.multiplier}, {q.right_shift}, {q.left_shift}}}"
                              for q in requants)
        self.chunks.append(f"static const grukit_requant_s64 {sym}[{len(requants)}] = {{\n    {body}\n}};\n")
        self.flash_bytes += 16 * len(requants)
        return sym

    def array(self, name: str, ctype: str, values, per_line: int = 16, comment: str = "") -> str:
        """A constant array of ``ctype`` holding ``values``, ``per_line`` to a line (a comment line above)."""
        values = [int(v) for v in np.asarray(values).ravel()]
        sym = f"{self.prefix}_{name}"
        fmt = _LITERAL[ctype]
        body = ",\n    ".join(", ".join(fmt(v) for v in values[i:i + per_line])
                              for i in range(0, len(values), per_line))
        above = f"/* {comment} */\n" if comment else ""
        self.chunks.append(f"{above}static const {ctype} {sym}[{len(values)}] = {{\n    {body}\n}};\n")
        self.flash_bytes += len(values) * _SIZE[ctype]
        return sym


def _i32_literal(v: int) -> str:
    return "INT32_MIN" if v == -(1 << 31) else str(v)


def _i64_literal(v: int) -> str:
    return "INT64_MIN" if v == -(1 << 63) else f"INT64_C({v})"


_LITERAL = {"uint8_t": str, "int8_t": str, "int16_t": str, "int32_t": _i32_literal, "int64_t": _i64_literal}
_SIZE = {"uint8_t": 1, "int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8}


def _requant_init(q: RequantS32) -> str:
    return f"{{{q.multiplier}, {q.rounding}, {q.right_shift}, {q.left_shift}}}"


def _weights(cf: _CFile, fc) -> tuple[str, str]:
    """The product's weight words and, for the block-sparse form, its block_groups / group_index arrays: the
    symbols (NULL for an array with nothing to hold) and the last two struct fields."""
    if fc.block_groups is None:
        return cf.array(f"{fc.name}_weights", "int32_t", fc.weights, per_line=8), "NULL, NULL"
    stored, groups = len(fc.group_index), len(fc.block_groups) * -(-fc.depth // 8)
    count_sym = cf.array(f"{fc.name}_block_groups", "uint8_t", fc.block_groups, per_line=32,
                         comment=f"{fc.name}: block-sparse, {stored} of {groups} groups (4 rows x 8 columns) stored")
    w_sym = cf.array(f"{fc.name}_weights", "int32_t", fc.weights, per_line=8) if stored else "NULL"
    index_sym = cf.array(f"{fc.name}_group_index", "uint8_t", fc.group_index, per_line=32) if stored else "NULL"
    return w_sym, f"{count_sym}, {index_sym}"


def _fc_s8(cf: _CFile, fc: FcS8) -> str:
    if fc.rows == 0:
        return "{0, 0, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL}"
    if fc.compact is not None:
        compact = _fc_compact_s8(cf, fc)
        return (f"{{{fc.rows}, {fc.depth}, NULL, NULL, NULL, {fc.input_offset}, {fc.general_requant}, NULL, NULL, "
                f"&{compact}}}")
    w_sym, sparse = _weights(cf, fc)
    b_sym = cf.array(f"{fc.name}_bias_start", "int32_t", fc.bias_start, per_line=8)
    q_sym = cf.requants(f"{fc.name}_requant", fc.requant)
    return (f"{{{fc.rows}, {fc.depth}, {w_sym}, {b_sym}, {q_sym}, {fc.input_offset}, {fc.general_requant}, "
            f"{sparse}, NULL}}")


def _compact_weights(cf: _CFile, fc, weights: np.ndarray) -> str:
    """A compact product's int8 weights (kernel.pack_compact_s8's bytes): the array's symbol."""
    return cf.array(f"{fc.name}_weights", "int8_t", weights, per_line=32,
                    comment=f"{fc.name}: {fc.rows} rows x {fc.depth} columns, column quads stored (0, 2, 1, 3)")


def _fc_compact_s8(cf: _CFile, fc: FcS8) -> str:
    """The grukit_fc_compact_s8 of a size-mode product (its arrays and the struct): the struct's symbol."""
    c = fc.compact
    w_sym = _compact_weights(cf, fc, c.weights)
    q_sym = _requant4(cf, f"{fc.name}_requant", "grukit_requant4_s8", REQUANT4_S8_BYTES,
                      [[_i32_literal(int(v)) for v in c.bias2], [str(int(v)) for v in c.multiplier],
                       [str(int(v)) for v in c.shift]])
    sym = f"{cf.prefix}_{fc.name}_compact"
    zps = ", ".join(map(str, c.zero_point))
    cf.chunks.append(f"static const grukit_fc_compact_s8 {sym} = {{{w_sym}, {q_sym}, {c.part_rows}, {{{zps}}}}};\n")
    return sym


def _requant4(cf: _CFile, name: str, ctype: str, nbytes: int, fields: list) -> str:
    """An array of grukit_requant4_s8 / _s16 records: each field's per-row literals (a multiple of 4 rows), four
    rows to a record. Returns its symbol."""
    blocks = ["{" + ", ".join("{" + ", ".join(f[b:b + 4]) + "}" for f in fields) + "}"
              for b in range(0, len(fields[0]), 4)]
    sym = f"{cf.prefix}_{name}"
    cf.chunks.append(f"static const {ctype} {sym}[{len(blocks)}] = {{\n    " + ",\n    ".join(blocks) + "\n};\n")
    cf.flash_bytes += nbytes * len(blocks)
    return sym


def _add_s8(cf: _CFile, p: AddTableS8) -> str:
    """The unit input's table is NULL (its term is x << 20)."""
    tables = [("NULL" if t is None else cf.array(f"{p.name}_term{i}x2", "int32_t", t, per_line=8) + " + 128")
              for i, t in ((1, p.input1_term2), (2, p.input2_term2))]
    return f"{{{tables[0]}, {tables[1]}, {_requant_init(p.output)}}}"


def _add_fast_s8(p: AddFastS8) -> str:
    return (f"{{{p.input1_multiplier}, {p.input2_multiplier}, {p.input1_offset}, {p.input2_offset}, "
            f"{_requant_init(p.output)}, {p.input1_shift}, {p.input2_shift}}}")


def _mul_s8(p: MulFastS8) -> str:
    return f"{{{p.input1_scale}, {p.input1_offset_scaled}, {p.input2_offset}, {_requant_init(p.output)}}}"


def _dense_s8(cf: _CFile, d: DenseS8) -> str:
    table = "NULL" if d.table is None else cf.array(f"{d.fc.name}_table", "int8_t", d.table) + " + 128"
    return f"{{{_fc_s8(cf, d.fc)}, {d.act_min}, {d.act_max}, {table}}}"


def _layer_s8(cf: _CFile, layer: GruLayerS8) -> str:
    fields = [
        str(layer.input_size), str(layer.hidden_size), str(layer.linear_before_reset),
        _fc_s8(cf, layer.x_fc), _fc_s8(cf, layer.h_fc), _fc_s8(cf, layer.hn_fc),
    ]
    adds = (layer.z_pre, layer.r_pre, layer.n_pre, layer.h_minus_n, layer.h_new)
    fields += ["{NULL, NULL, {0, 0, 0, 0}}"] * len(adds) if layer.compact else [_add_s8(cf, p) for p in adds]
    fields += [
        _mul_s8(layer.r_mul), _mul_s8(layer.z_mul),
        *(cf.array(f"{layer.name}_{g}_table", "int8_t", table) + " + 128"
          for g, table in (("z", layer.z_table), ("r", layer.r_table), ("n", layer.n_table))),
    ]
    if layer.compact:
        sym = f"{cf.prefix}_{layer.name}_adds"
        cf.chunks.append(f"/* {layer.name}: z_pre, r_pre, n_pre, h_minus_n, h_new, computed (size mode) */\n"
                         f"static const grukit_add_fast_s8 {sym}[{len(adds)}] = {{\n    "
                         + ",\n    ".join(map(_add_fast_s8, adds)) + "\n};\n")
        cf.flash_bytes += ADD_FAST_S8_BYTES * len(adds)
    fields.append(sym if layer.compact else "NULL")
    return "{\n        " + ",\n        ".join(fields) + "\n    }"


def _fc_s16(cf: _CFile, fc: FcS16) -> str:
    if fc.rows == 0:
        return "{0, 0, NULL, NULL, NULL, NULL, NULL}"
    if fc.compact is not None:
        return f"{{{fc.rows}, {fc.depth}, NULL, NULL, NULL, NULL, &{_fc_compact_s16(cf, fc)}}}"
    w_sym, sparse = _weights(cf, fc)
    q_sym = cf.requants_s64(f"{fc.name}_requant", fc.requant)
    return f"{{{fc.rows}, {fc.depth}, {w_sym}, {q_sym}, {sparse}, NULL}}"


def _fc_compact_s16(cf: _CFile, fc: FcS16) -> str:
    """The grukit_fc_compact_s16 of a size-mode product (its arrays and the struct): the struct's symbol."""
    c = fc.compact
    w_sym = _compact_weights(cf, fc, c.weights)
    q_sym = _requant4(cf, f"{fc.name}_requant", "grukit_requant4_s16", REQUANT4_S16_BYTES,
                      [[f"{int(v)}u" for v in c.start_lo], [_i32_literal(int(v)) for v in c.start_hi],
                       [str(int(v)) for v in c.multiplier], [str(int(v)) for v in c.shift]])
    sym = f"{cf.prefix}_{fc.name}_compact"
    cf.chunks.append(f"static const grukit_fc_compact_s16 {sym} = {{{w_sym}, {q_sym}}};\n")
    return sym


def _add_s16(p: AddFastS16) -> str:
    return ("{" + ", ".join([*map(_requant_init, (p.input1, p.input2, p.output)), str(p.input1_sign_mask),
                             str(p.input2_sign_mask)]) + "}")


def _table_input_s16(p: TableInputS16) -> str:
    return f"{{{p.multiplier}, {p.rounding}, {p.right_shift}}}"


def _dense_s16(cf: _CFile, d: DenseS16) -> str:
    act_input = "{0, 0, 0}" if d.act_input is None else _table_input_s16(d.act_input)
    return f"{{{_fc_s16(cf, d.fc)}, {d.act_min}, {d.act_max}, {d.act_op}, {act_input}}}"


def _layer_s16(cf: _CFile, layer: GruLayerS16) -> str:
    fields = [
        str(layer.input_size), str(layer.hidden_size), str(layer.linear_before_reset),
        _fc_s16(cf, layer.x_fc), _fc_s16(cf, layer.h_fc), _fc_s16(cf, layer.hn_fc),
        *(_add_s16(p) for p in (layer.z_pre, layer.r_pre, layer.n_pre, layer.h_minus_n, layer.h_new)),
        _requant_init(layer.r_mul), _requant_init(layer.z_mul),
        *(_table_input_s16(p) for p in (layer.z_act, layer.r_act, layer.n_act)),
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
    state = qmodel.scheme.activation_bytes * sum(layer.hidden_size for layer in qmodel.layers)
    if qmodel.scheme is INT8:
        scratch = [2 * max(_round8(l.input_size), _round8(l.hidden_size)) + 8 * _round4(l.hidden_size)
                   for l in qmodel.layers]
        if qmodel.head is not None:
            scratch.append(2 * _head_depth(qmodel) + _head_rows(qmodel))
    else:
        scratch = [2 * max(_round8(l.input_size), _round8(l.hidden_size)) + 12 * _round4(l.hidden_size)
                   for l in qmodel.layers]
        if qmodel.head is not None:
            scratch.append(2 * _head_depth(qmodel) + 2 * _head_rows(qmodel))
    return state, max(scratch)


def _head_depth(qmodel) -> int:
    """The widest head layer input, rounded up to 8 (the kernels' head_*_depth)."""
    return max(_round8(d.fc.w_q.shape[1]) for d in qmodel.head.layers)


def _head_rows(qmodel) -> int:
    """The widest head layer output, rounded up to 4."""
    return max(_round4(d.fc.w_q.shape[0]) for d in qmodel.head.layers)


# ---------------------------------------------------------------------------------------------------------
# export_c
# ---------------------------------------------------------------------------------------------------------


def _banner(qmodel, what: str) -> str:
    source = getattr(qmodel.float_model, "name", None) or "an unnamed model"
    return (f"/* GENERATED by grukit {__version__} from model '{source}' (scheme {qmodel.scheme}): {what}.\n"
            " * Do not edit; regenerate with grukit export MODEL --calib CALIB --c. */\n")


def _generate_model(qmodel, name: str, sparse: bool = True, optimize: str = "speed") -> tuple[str, str, int]:
    kernel = prepare_model(qmodel, sparse=sparse, optimize=optimize)
    suffix = kernel.c_suffix
    s8 = qmodel.scheme is INT8
    cf = _CFile(name)
    layer_inits = [(_layer_s8 if s8 else _layer_s16)(cf, layer) for layer in kernel.layers]
    head_init = "NULL"
    if kernel.head:
        dense = [_dense_s8(cf, d) if s8 else _dense_s16(cf, d) for d in kernel.head]
        cf.chunks.append(f"static const grukit_dense_{suffix} {name}_head[{len(dense)}] = {{\n    "
                         + ",\n    ".join(dense) + "\n};\n")
        head_init = f"{name}_head"
    cf.chunks.append(
        f"static const grukit_gru_layer_{suffix} {name}_layers[{len(layer_inits)}] = {{\n    "
        + ",\n    ".join(layer_inits) + "\n};\n")
    cf.chunks.append(f"const grukit_model_{suffix} {name} = {{{len(layer_inits)}, {name}_layers, {len(kernel.head)}, "
                     f"{head_init}, {kernel.per_step}}};\n")
    return suffix, "\n".join(cf.chunks), cf.flash_bytes


def _header(qmodel, name: str, suffix: str, flash_bytes: int, optimize: str) -> str:
    up = name.upper()
    state, scratch = buffer_sizes(qmodel)
    in_q, out_q = qmodel.input_q, qmodel.output_q
    ctype = "int8_t" if suffix == "s8" else "int16_t"
    act = qmodel.head.activation if qmodel.head is not None else "linear"
    lines = [
        f"#ifndef {up}_H", f"#define {up}_H", "", "#include <math.h>", "#include <stdint.h>", "",
        '#include "grukit_gru.h"', "",
        f"#define {up}_SCHEME_{suffix.upper()} 1",
        f"#define {up}_FORM_{optimize.upper()} 1 /* grukit_gru.c may be built with -D{FORM_ONLY_DEFINE[optimize]} */",
        f"#define {up}_NUM_LAYERS {len(qmodel.layers)}",
        f"#define {up}_INPUT_SIZE {qmodel.layers[0].input_size}",
        f"#define {up}_OUTPUT_SIZE {qmodel.output_size}",
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


def _write_model(qmodel, model_dir: Path, example_dir: Path, name: str, sparse: bool,
                 optimize: str) -> list[Path]:
    if not name.isidentifier():
        raise BadInputError(f"name {name!r} must be a C identifier")
    if qmodel.scheme not in SCHEMES:
        raise UnsupportedModelError(f"scheme {qmodel.scheme} has no C kernel")
    suffix, body, flash_bytes = _generate_model(qmodel, name, sparse, optimize)
    model_dir.mkdir(parents=True, exist_ok=True)
    example_dir.mkdir(parents=True, exist_ok=True)
    h_path, c_path, main_path = model_dir / f"{name}.h", model_dir / f"{name}.c", example_dir / "main.c"
    h_path.write_text(_banner(qmodel, "model constants, declarations")
                      + _header(qmodel, name, suffix, flash_bytes, optimize))
    c_path.write_text(_banner(qmodel, "model constants") + "#include <stddef.h>\n#include <stdint.h>\n\n"
                      f'#include "{name}.h"\n\n' + body)
    main_path.write_text(_banner(qmodel, "example streaming loop") + _example_main(qmodel, name, suffix))
    return [h_path, c_path, main_path]


def export_c(qmodel, out_dir, name: str = "grukit_model", sparse: bool = True,
             optimize: str = "speed") -> list[Path]:
    """Write ``<name>.h``, ``<name>.c`` and an example ``main.c`` into out_dir; returns their paths.

    qmodel: a QuantizedGRUModel (``grukit.quantize``), scheme "int8" (fused _s8 kernel) or "16x8" (_s16).
    Compile the .c with firmware_ref's src/grukit_gru.c and src/grukit_tables.c, include paths
    firmware_ref/include and firmware_ref/src; a program calling the header's ``<name>_quantize_input``
    (main.c does) links libm (-lm) for round(). ``export_c_library`` writes all of that as one folder.
    sparse: write each product whose zero 4x8 weight groups make the block-sparse form smaller in that form
    (the kernel then skips them); False writes every product dense.
    optimize: "speed" (the default: packed weights and tables) or "size" (a byte per weight, no padding rows or
    columns, the requantizations in records of 4 rows, nine bytes a row for int8 and 13 for 16x8; int8's ADD / SUB
    terms computed instead of tabulated; no block-sparse form). Both give the same integers.
    """
    out = Path(out_dir)
    return _write_model(qmodel, out, out, name, sparse, optimize)


# The kernel's files a library folder carries (paths in firmware_ref/), all into its src/.
LIBRARY_KERNEL_FILES = ("include/grukit_gru.h", "src/grukit_gru.c", "src/grukit_tables.h", "src/grukit_tables.c")
# The templates in firmware_ref/library/ and where they go; @GRUKIT_...@ fields are filled in.
LIBRARY_TEMPLATES = {"CMakeLists.txt": "CMakeLists.txt", "arm-none-eabi.cmake": "cmake/arm-none-eabi.cmake",
                     "README.md": "README.md"}
ARDUINO_URL = "https://pypi.org/project/grukit/"


def _library_manifests(qmodel, name: str, optimize: str) -> dict[str, str]:
    """library.json (PlatformIO) and library.properties (Arduino IDE, the 1.5 src/ layout)."""
    source = getattr(qmodel.float_model, "name", None) or "an unnamed model"
    sentence = f"A GRU network quantized by grukit ({qmodel.scheme}): the fused integer kernel and its constants."
    paragraph = (f"Generated by grukit {__version__} from model '{source}'. Bit-exact with grukit's NumPy runtime; "
                 "C99, no allocation, no floating point in the kernel.")
    pio = {"name": name, "version": __version__, "description": f"{sentence} {paragraph}",
           "keywords": ["gru", "rnn", "quantized", "tinyml", "grukit"], "frameworks": "*", "platforms": "*",
           "build": {"srcDir": "src", "includeDir": "src", "flags": f"-D{FORM_ONLY_DEFINE[optimize]}"}, "export": {"exclude": ["build"]}}
    arduino = {"name": name, "version": __version__, "author": "grukit", "maintainer": "grukit",
               "sentence": sentence, "paragraph": paragraph, "category": "Data Processing", "url": ARDUINO_URL,
               "architectures": "*", "includes": f"{name}.h"}
    return {"library.json": json.dumps(pio, indent=2) + "\n",
            "library.properties": "".join(f"{k}={v}\n" for k, v in arduino.items())}


def export_c_library(qmodel, out_dir, name: str = "grukit_model", sparse: bool = True,
                     optimize: str = "speed") -> list[Path]:
    """Write a self-contained C library for ``qmodel`` into out_dir; returns every file written.

    The folder needs nothing from grukit: ``src/`` holds the kernel's sources (copied from firmware_ref) and the
    model's ``<name>.h`` / ``<name>.c``; ``examples/main.c`` a streaming loop; ``CMakeLists.txt`` builds a
    static library ``<name>`` (and, on its own for the host, the example); ``cmake/arm-none-eabi.cmake`` is a
    toolchain file taking the core as ``-DGRUKIT_CPU``; ``library.json`` and ``library.properties`` let
    PlatformIO and the Arduino IDE take the folder as a library. The same model gives the same bytes.
    sparse, optimize: as export_c's.
    """
    out = Path(out_dir)
    written = _write_model(qmodel, out / "src", out / "examples", name, sparse, optimize)
    firmware = firmware_dir()
    for relative in LIBRARY_KERNEL_FILES:
        target = out / "src" / Path(relative).name
        shutil.copyfile(firmware / relative, target)
        written.append(target)
    fields = {"@GRUKIT_LIBRARY@": name, "@GRUKIT_UPPER@": name.upper(), "@GRUKIT_VERSION@": __version__,
              "@GRUKIT_MODEL@": getattr(qmodel.float_model, "name", None) or "an unnamed model",
              "@GRUKIT_SCHEME@": str(qmodel.scheme), "@GRUKIT_SUFFIX@": qmodel.scheme.c_suffix,
              "@GRUKIT_FORM_DEFINE@": FORM_ONLY_DEFINE[optimize]}
    texts = {}
    for template, relative in LIBRARY_TEMPLATES.items():
        text = (firmware / "library" / template).read_text()
        for field, value in fields.items():
            text = text.replace(field, value)
        texts[relative] = text
    texts.update(_library_manifests(qmodel, name, optimize))
    for relative, text in texts.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(target)
    return written


def constant_bytes(qmodel, sparse: bool = True, optimize: str = "speed") -> int:
    """Flash bytes of the generated constants (weights, biases, parameters, tables; structs excluded, except
    the size form's ADD / SUB records, which replace tables): the arrays export_c(qmodel, ..., sparse=sparse,
    optimize=optimize) writes."""
    return _generate_model(qmodel, "m", sparse, optimize)[2]
