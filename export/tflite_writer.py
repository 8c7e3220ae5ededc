"""Write ``.tflite`` flatbuffers directly, without TensorFlow.

A small graph builder over the generated TFLite schema bindings (the ``tflite`` package) and ``flatbuffers``.
It knows nothing about GRUs: the GRU exporters describe their graphs with it.

    b = TFLiteBuilder(description="my graph")
    x = b.add_tensor("x", [1, 4], "int8", quant=QParams(0.05, -3, "int8"))
    w = b.add_tensor("w", [3, 4], "int8", data=w_s8, quant=TensorQuant(w_scales, [0, 0, 0], 0))
    y = b.add_tensor("y", [1, 3], "int8", quant=QParams(0.1, 2, "int8"))
    b.add_op("FULLY_CONNECTED", inputs=[x, w, -1], outputs=[y])
    b.set_io(inputs=[x], outputs=[y])
    b.add_grukit_metadata(scheme="int8", gate_variant="linear_before_reset=1")
    data = b.finish()                      # bytes of a .tflite file

What the file holds, as the schema (version 3) asks:
- buffer 0 is the empty buffer; tensors without constant data (activations) point to it.
- each constant tensor gets exactly one buffer; an op that reuses a weight reuses its tensor index, so the
  weight is stored once however many ops read it.
- each operator code carries both ``builtin_code`` and ``deprecated_builtin_code`` (the builtin code capped
  at 127, the placeholder for codes that do not fit the old int8 field) and an op version from TFLite's
  versioning rules that covers the op's dtypes (int16 variants: FULLY_CONNECTED 7, ADD 3, SUB 5, MUL 4,
  LOGISTIC / TANH 3); LiteRT registers all of them, TFLite-Micro ignores versions.
- a ``min_runtime_version`` metadata entry (16 bytes, zero padded), as the converter writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import tflite as tfl

from grukit.core.version import __version__
from grukit.core.errors import BadInputError, UnsupportedModelError

SCHEMA_VERSION = 3
GRUKIT_METADATA_NAME = "grukit"
MIN_RUNTIME_VERSION_NAME = "min_runtime_version"
# Constant buffers start on a 16-byte boundary, as the TFLite converter aligns them, so int32/int64 biases
# can be read in place on a microcontroller without unaligned accesses.
BUFFER_ALIGNMENT = 16

_TT = tfl.TensorType
DTYPES = {
    "float32": (_TT.FLOAT32, np.float32),
    "int8": (_TT.INT8, np.int8),
    "int16": (_TT.INT16, np.int16),
    "int32": (_TT.INT32, np.int32),
    "int64": (_TT.INT64, np.int64),
}

_BO = tfl.BuiltinOperator
_OPT = tfl.BuiltinOptions
_ACT = tfl.ActivationFunctionType
ACTIVATIONS = {"NONE": _ACT.NONE, "RELU": _ACT.RELU, "RELU_N1_TO_1": _ACT.RELU_N1_TO_1, "RELU6": _ACT.RELU6,
               "TANH": _ACT.TANH}

# Builtin option names each op accepts, with their defaults. ADD and SUB write pot_scale_int16 = False: the
# schema's default (True) tells LiteRT to use its power-of-two-scale int16 kernel, which grukit never wants.
OP_OPTIONS = {
    "FULLY_CONNECTED": {"fused_activation_function": "NONE", "keep_num_dims": False},
    "ADD": {"fused_activation_function": "NONE", "pot_scale_int16": False},
    "SUB": {"fused_activation_function": "NONE", "pot_scale_int16": False},
    "MUL": {"fused_activation_function": "NONE"},
    "LOGISTIC": {},
    "TANH": {},
    "RESHAPE": {"new_shape": None},
    "CONCATENATION": {"axis": 0, "fused_activation_function": "NONE"},
    "QUANTIZE": {},
    "DEQUANTIZE": {},
    "SOFTMAX": {"beta": 1.0},
    "STRIDED_SLICE": {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0,
                      "shrink_axis_mask": 0},
    "SPLIT": {"num_splits": None},
    "UNPACK": {"num": None, "axis": 0},
}
SUPPORTED_OPS = tuple(OP_OPTIONS)

# Minimum TFLite runtime per (op, version), from TensorFlow's runtime_version table (tools/versioning).
_MIN_RUNTIME = {
    ("FULLY_CONNECTED", 1): "1.5.0", ("FULLY_CONNECTED", 4): "1.14.0", ("FULLY_CONNECTED", 5): "2.0.0",
    ("FULLY_CONNECTED", 6): "2.1.0", ("FULLY_CONNECTED", 7): "2.3.0",
    ("ADD", 1): "1.5.0", ("ADD", 2): "1.14.0", ("ADD", 3): "2.4.0",
    ("SUB", 1): "1.6.0", ("SUB", 2): "1.14.0", ("SUB", 5): "2.4.0",
    ("MUL", 1): "1.5.0", ("MUL", 2): "1.14.0", ("MUL", 3): "1.15.0", ("MUL", 4): "2.3.0",
    ("LOGISTIC", 1): "1.14.0", ("LOGISTIC", 2): "1.14.0", ("LOGISTIC", 3): "2.3.0",
    ("TANH", 1): "1.14.0", ("TANH", 2): "1.14.0", ("TANH", 3): "2.3.0",
    ("RESHAPE", 1): "1.5.0",
    ("CONCATENATION", 1): "1.5.0", ("CONCATENATION", 2): "1.14.0", ("CONCATENATION", 3): "2.3.0",
    ("QUANTIZE", 1): "1.14.0", ("QUANTIZE", 2): "1.15.0",
    ("DEQUANTIZE", 1): "1.13.1", ("DEQUANTIZE", 2): "1.14.0", ("DEQUANTIZE", 3): "1.15.0",
    ("DEQUANTIZE", 5): "2.7.0",
    ("SOFTMAX", 1): "1.5.0", ("SOFTMAX", 2): "1.14.0", ("SOFTMAX", 3): "2.3.0",
    ("STRIDED_SLICE", 1): "1.6.0", ("STRIDED_SLICE", 2): "1.14.0",
    ("SPLIT", 1): "1.5.0", ("SPLIT", 2): "1.14.0", ("SPLIT", 3): "1.14.0", ("SPLIT", 4): "2.3.0",
    ("UNPACK", 1): "1.11.0", ("UNPACK", 2): "1.14.0", ("UNPACK", 4): "2.3.0",
}


@dataclass(frozen=True)
class TensorQuant:
    """Affine quantization of a tensor as the file stores it: per tensor (one scale) or per channel.

    real = scales[c] * (q - zero_points[c]) along axis ``quantized_dimension``. Scales are stored as
    float32, zero points as int64, as in the schema.
    """

    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int = 0

    def __post_init__(self):
        scales = tuple(float(np.float32(s)) for s in np.ravel(self.scales))
        zps = tuple(int(z) for z in np.ravel(self.zero_points))
        if not scales or len(scales) != len(zps):
            raise BadInputError(f"quantization needs as many zero points ({len(zps)}) as scales ({len(scales)})")
        if not all(np.isfinite(s) and s > 0 for s in scales):
            raise BadInputError(f"quantization scales must be positive and finite, got {scales}")
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "zero_points", zps)
        object.__setattr__(self, "quantized_dimension", int(self.quantized_dimension))

    @classmethod
    def of(cls, quant) -> "TensorQuant":
        """Accept a TensorQuant or any per-tensor record with ``scale`` and ``zero_point`` (e.g. QParams)."""
        if isinstance(quant, cls):
            return quant
        if hasattr(quant, "scale") and hasattr(quant, "zero_point"):
            return cls((quant.scale,), (quant.zero_point,), 0)
        raise BadInputError(f"unsupported quantization record {quant!r}: give a TensorQuant or a QParams")


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int
    quant: TensorQuant | None


@dataclass
class _Op:
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict


class TFLiteBuilder:
    """Collects tensors, ops and metadata of one subgraph, then serializes them with ``finish()``."""

    def __init__(self, description: str = "grukit"):
        self.description = description
        self._buffers: list[bytes | None] = [None]  # buffer 0: the schema's always-present empty buffer
        self._tensors: list[_Tensor] = []
        self._ops: list[_Op] = []
        self._inputs: tuple[int, ...] | None = None
        self._outputs: tuple[int, ...] | None = None
        self._metadata: list[tuple[str, int]] = []

    def add_tensor(self, name: str, shape, dtype: str, data: np.ndarray | None = None, quant=None) -> int:
        """Add a tensor and return its index.

        shape: list of ints (``[]`` for a scalar). dtype: one of ``DTYPES``. data: a constant's value, an
        array of exactly that dtype and shape, stored in its own buffer once (reuse the returned index to
        share it). quant: None, a ``QParams`` (per tensor) or a ``TensorQuant`` (per channel).
        """
        if dtype not in DTYPES:
            raise UnsupportedModelError(f"tensor {name!r}: dtype {dtype!r} not supported, use one of {tuple(DTYPES)}")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise BadInputError(f"tensor {name!r}: shape {shape} has a negative dimension")
        buffer = 0
        if data is not None:
            data = np.asarray(data)
            if data.dtype != DTYPES[dtype][1]:
                raise BadInputError(f"tensor {name!r}: data is {data.dtype}, declared {dtype}")
            if data.shape != shape:
                raise BadInputError(f"tensor {name!r}: data shape {data.shape} != declared shape {shape}")
            # The schema stores tensor data little-endian, row-major.
            self._buffers.append(np.ascontiguousarray(data, data.dtype.newbyteorder("<")).tobytes())
            buffer = len(self._buffers) - 1
        tq = None if quant is None else TensorQuant.of(quant)
        if tq is not None:
            n_channels = len(tq.scales)
            if n_channels > 1 and not (0 <= tq.quantized_dimension < len(shape)
                                       and shape[tq.quantized_dimension] == n_channels):
                raise BadInputError(f"tensor {name!r}: {n_channels} channel scales do not match dimension "
                                    f"{tq.quantized_dimension} of shape {shape}")
        self._tensors.append(_Tensor(name, shape, dtype, buffer, tq))
        return len(self._tensors) - 1

    def tensor_dtype(self, index: int) -> str:
        """The dtype name of tensor ``index``."""
        return self._tensors[index].dtype

    def add_op(self, kind: str, inputs, outputs, **options) -> None:
        """Append an op (ops run in the order added). inputs/outputs: tensor indices, -1 for an omitted
        optional input (a FULLY_CONNECTED without bias). options: the op's builtin options, see OP_OPTIONS;
        an option the op does not have raises rather than being dropped."""
        if kind not in OP_OPTIONS:
            raise UnsupportedModelError(f"TFLite op {kind!r} not supported by the writer; supported: {SUPPORTED_OPS}")
        unknown = set(options) - set(OP_OPTIONS[kind])
        if unknown:
            raise UnsupportedModelError(f"{kind}: unknown option(s) {sorted(unknown)}; it has {sorted(OP_OPTIONS[kind])}")
        merged = {**OP_OPTIONS[kind], **options}
        for key in ("fused_activation_function",):
            if key in merged and merged[key] not in ACTIVATIONS:
                raise UnsupportedModelError(f"{kind}: fused activation {merged[key]!r} not in {tuple(ACTIVATIONS)}")
        inputs, outputs = tuple(int(i) for i in inputs), tuple(int(o) for o in outputs)
        for i in inputs + outputs:
            if not -1 <= i < len(self._tensors):
                raise BadInputError(f"{kind}: tensor index {i} does not exist")
        if -1 in outputs or not outputs:
            raise BadInputError(f"{kind}: every output must be a tensor, got {outputs}")
        if kind == "SPLIT" and merged["num_splits"] is None:
            merged["num_splits"] = len(outputs)
        if kind == "UNPACK" and merged["num"] is None:
            merged["num"] = len(outputs)
        self._ops.append(_Op(kind, inputs, outputs, merged))

    def set_io(self, inputs, outputs) -> None:
        """Declare the subgraph's input and output tensors, in the order interpreters index them."""
        self._inputs = tuple(int(i) for i in inputs)
        self._outputs = tuple(int(o) for o in outputs)
        for i in self._inputs:
            if self._tensors[i].buffer != 0:
                raise BadInputError(f"model input {self._tensors[i].name!r} is a constant")

    def add_metadata(self, name: str, data: bytes) -> None:
        """Store ``data`` in its own buffer under metadata entry ``name``."""
        if any(n == name for n, _ in self._metadata):
            raise BadInputError(f"metadata {name!r} added twice")
        self._buffers.append(bytes(data))
        self._metadata.append((name, len(self._buffers) - 1))

    def add_grukit_metadata(self, scheme: str, gate_variant: str, **extra) -> None:
        """Store a small JSON record under ``"grukit"``: the quantization scheme, the gate variant, the
        grukit version, and any JSON-serializable ``extra`` fields."""
        record = {"scheme": scheme, "gate_variant": gate_variant, "grukit_version": __version__, **extra}
        self.add_metadata(GRUKIT_METADATA_NAME, json.dumps(record, sort_keys=True).encode("utf-8"))

    def _op_version(self, op: _Op) -> int:
        """The op version for ``op``'s dtypes, following TFLite's tools/versioning/op_version.cc; for 16x8
        FULLY_CONNECTED it is 7, the version that introduced int16 activations with int8 weights."""
        dt_in = self._tensors[op.inputs[0]].dtype if op.inputs and op.inputs[0] >= 0 else None
        dt_out = self._tensors[op.outputs[0]].dtype
        kind = op.kind
        if kind == "FULLY_CONNECTED":
            if dt_in == "int16":
                return 7  # int16 activations, int8 weights: introduced with TF 2.3
            if op.options["keep_num_dims"]:
                return 5
            if dt_in == "int8":
                return 4
            if len(op.inputs) < 3 or op.inputs[2] < 0:
                return 6  # no bias
            return 1
        if kind == "ADD":
            return {"int16": 3, "int8": 2}.get(dt_in, 1)
        if kind == "SUB":
            return {"int16": 5, "int8": 2}.get(dt_in, 1)
        if kind == "MUL":
            if dt_in == "int16":
                return 4
            if dt_in == "int8":
                quants = [self._tensors[t].quant for t in (*op.inputs[:2], op.outputs[0])]
                if any(q is None for q in quants):
                    return 2
                s1, s2, so = (q.scales[0] for q in quants)
                return 3 if s1 * s2 / so >= 1.0 else 2  # a rescale >= 1 needs version 3
            return 1
        if kind in ("LOGISTIC", "TANH", "SOFTMAX", "CONCATENATION"):
            return {"int16": 3, "int8": 2}.get(dt_in, 1)
        if kind == "QUANTIZE":
            return 2 if dt_out == "int16" else 1
        if kind == "DEQUANTIZE":
            if dt_in == "int16":
                return 3
            if dt_in == "int8":
                return 5 if len(self._tensors[op.inputs[0]].quant.scales) > 1 else 2
            return 1
        if kind == "STRIDED_SLICE":
            return 2 if dt_in == "int8" else 1
        if kind == "SPLIT":
            dt_data = self._tensors[op.inputs[1]].dtype  # input 0 is the axis
            return {"int16": 4, "int32": 3, "int8": 2}.get(dt_data, 1)
        if kind == "UNPACK":
            return {"int16": 4, "int8": 2}.get(dt_in, 1)
        return 1

    def min_runtime_version(self) -> str:
        """The oldest TFLite runtime that has every op version of the graph, "" if none is known."""
        best = ""
        for op in self._ops:
            v = _MIN_RUNTIME.get((op.kind, self._op_version(op)), "")
            if v and (not best or _version_key(v) > _version_key(best)):
                best = v
        return best

    def finish(self) -> bytes:
        """Serialize the model and return the bytes of the ``.tflite`` file (the builder is unchanged, so
        it can be extended and finished again)."""
        if self._inputs is None:
            raise BadInputError("set_io() was not called: the model has no declared inputs and outputs")
        buffers, metadata = list(self._buffers), list(self._metadata)
        if not any(name == MIN_RUNTIME_VERSION_NAME for name, _ in metadata):
            # The converter reserves 16 bytes and writes the version string zero padded.
            buffers.append(self.min_runtime_version().encode("ascii")[:15].ljust(16, b"\0"))
            metadata.append((MIN_RUNTIME_VERSION_NAME, len(buffers) - 1))
        fb = flatbuffers.Builder(1024)

        codes: list[tuple[str, int]] = []
        op_code_index = []
        for op in self._ops:
            key = (op.kind, self._op_version(op))
            if key not in codes:
                codes.append(key)
            op_code_index.append(codes.index(key))

        buffer_offsets = [self._write_buffer(fb, data) for data in buffers]
        tensor_offsets = [self._write_tensor(fb, t) for t in self._tensors]
        operator_offsets = [self._write_operator(fb, op, idx) for op, idx in zip(self._ops, op_code_index)]
        code_offsets = [_write_operator_code(fb, kind, version) for kind, version in codes]
        metadata_offsets = []
        for name, buf in metadata:
            name_off = fb.CreateString(name)
            tfl.MetadataStart(fb)
            tfl.MetadataAddName(fb, name_off)
            tfl.MetadataAddBuffer(fb, buf)
            metadata_offsets.append(tfl.MetadataEnd(fb))

        tensors_vec = _offset_vector(fb, tensor_offsets)
        ops_vec = _offset_vector(fb, operator_offsets)
        inputs_vec = _int32_vector(fb, self._inputs)
        outputs_vec = _int32_vector(fb, self._outputs)
        name_off = fb.CreateString("main")
        tfl.SubGraphStart(fb)
        tfl.SubGraphAddTensors(fb, tensors_vec)
        tfl.SubGraphAddInputs(fb, inputs_vec)
        tfl.SubGraphAddOutputs(fb, outputs_vec)
        tfl.SubGraphAddOperators(fb, ops_vec)
        tfl.SubGraphAddName(fb, name_off)
        subgraph = tfl.SubGraphEnd(fb)

        subgraphs_vec = _offset_vector(fb, [subgraph])
        codes_vec = _offset_vector(fb, code_offsets)
        buffers_vec = _offset_vector(fb, buffer_offsets)
        metadata_vec = _offset_vector(fb, metadata_offsets)
        desc_off = fb.CreateString(self.description)
        tfl.ModelStart(fb)
        tfl.ModelAddVersion(fb, SCHEMA_VERSION)
        tfl.ModelAddOperatorCodes(fb, codes_vec)
        tfl.ModelAddSubgraphs(fb, subgraphs_vec)
        tfl.ModelAddDescription(fb, desc_off)
        tfl.ModelAddBuffers(fb, buffers_vec)
        tfl.ModelAddMetadata(fb, metadata_vec)
        model = tfl.ModelEnd(fb)
        fb.Finish(model, file_identifier=b"TFL3")
        return bytes(fb.Output())

    def write(self, path) -> bytes:
        """``finish()`` and write the bytes to ``path``; returns them."""
        data = self.finish()
        Path(path).write_bytes(data)
        return data

    # --- serialization helpers -------------------------------------------------------------------------

    @staticmethod
    def _write_buffer(fb, data: bytes | None) -> int:
        data_off = None
        if data:
            fb.StartVector(1, len(data), BUFFER_ALIGNMENT)
            fb.head = fb.head - len(data)
            fb.Bytes[fb.head:fb.head + len(data)] = data
            data_off = fb.EndVector()
        tfl.BufferStart(fb)
        if data_off is not None:
            tfl.BufferAddData(fb, data_off)
        return tfl.BufferEnd(fb)

    @staticmethod
    def _write_tensor(fb, t: _Tensor) -> int:
        name_off = fb.CreateString(t.name)
        shape_off = _int32_vector(fb, t.shape)
        quant_off = None
        if t.quant is not None:
            scale_off = _numpy_vector(fb, np.asarray(t.quant.scales, np.float32))
            zp_off = _numpy_vector(fb, np.asarray(t.quant.zero_points, np.int64))
            tfl.QuantizationParametersStart(fb)
            tfl.QuantizationParametersAddScale(fb, scale_off)
            tfl.QuantizationParametersAddZeroPoint(fb, zp_off)
            tfl.QuantizationParametersAddQuantizedDimension(fb, t.quant.quantized_dimension)
            quant_off = tfl.QuantizationParametersEnd(fb)
        tfl.TensorStart(fb)
        tfl.TensorAddShape(fb, shape_off)
        tfl.TensorAddType(fb, DTYPES[t.dtype][0])
        tfl.TensorAddBuffer(fb, t.buffer)
        tfl.TensorAddName(fb, name_off)
        if quant_off is not None:
            tfl.TensorAddQuantization(fb, quant_off)
        return tfl.TensorEnd(fb)

    @staticmethod
    def _write_operator(fb, op: _Op, code_index: int) -> int:
        options_type, options_off = _write_options(fb, op.kind, op.options)
        inputs_vec = _int32_vector(fb, op.inputs)
        outputs_vec = _int32_vector(fb, op.outputs)
        tfl.OperatorStart(fb)
        tfl.OperatorAddOpcodeIndex(fb, code_index)
        tfl.OperatorAddInputs(fb, inputs_vec)
        tfl.OperatorAddOutputs(fb, outputs_vec)
        if options_off is not None:
            tfl.OperatorAddBuiltinOptionsType(fb, options_type)
            tfl.OperatorAddBuiltinOptions(fb, options_off)
        return tfl.OperatorEnd(fb)


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _write_operator_code(fb, kind: str, version: int) -> int:
    code = getattr(_BO, kind)
    tfl.OperatorCodeStart(fb)
    # The old int8 field holds the code when it fits and 127 (PLACEHOLDER_FOR_GREATER_OP_CODES) otherwise;
    # readers take the max of both fields.
    tfl.OperatorCodeAddDeprecatedBuiltinCode(fb, min(code, 127))
    tfl.OperatorCodeAddBuiltinCode(fb, code)
    tfl.OperatorCodeAddVersion(fb, version)
    return tfl.OperatorCodeEnd(fb)


def _write_options(fb, kind: str, o: dict):
    """The builtin options table of one op: (BuiltinOptions type, offset) or (0, None) if it has none."""
    act = ACTIVATIONS.get(o.get("fused_activation_function", "NONE"))
    if kind == "FULLY_CONNECTED":
        tfl.FullyConnectedOptionsStart(fb)
        tfl.FullyConnectedOptionsAddFusedActivationFunction(fb, act)
        tfl.FullyConnectedOptionsAddKeepNumDims(fb, bool(o["keep_num_dims"]))
        return _OPT.FullyConnectedOptions, tfl.FullyConnectedOptionsEnd(fb)
    if kind == "ADD":
        tfl.AddOptionsStart(fb)
        tfl.AddOptionsAddFusedActivationFunction(fb, act)
        tfl.AddOptionsAddPotScaleInt16(fb, bool(o["pot_scale_int16"]))
        return _OPT.AddOptions, tfl.AddOptionsEnd(fb)
    if kind == "SUB":
        tfl.SubOptionsStart(fb)
        tfl.SubOptionsAddFusedActivationFunction(fb, act)
        tfl.SubOptionsAddPotScaleInt16(fb, bool(o["pot_scale_int16"]))
        return _OPT.SubOptions, tfl.SubOptionsEnd(fb)
    if kind == "MUL":
        tfl.MulOptionsStart(fb)
        tfl.MulOptionsAddFusedActivationFunction(fb, act)
        return _OPT.MulOptions, tfl.MulOptionsEnd(fb)
    if kind == "RESHAPE":
        if o["new_shape"] is None:
            return 0, None  # the shape comes from the op's second input
        shape_vec = _int32_vector(fb, o["new_shape"])
        tfl.ReshapeOptionsStart(fb)
        tfl.ReshapeOptionsAddNewShape(fb, shape_vec)
        return _OPT.ReshapeOptions, tfl.ReshapeOptionsEnd(fb)
    if kind == "CONCATENATION":
        tfl.ConcatenationOptionsStart(fb)
        tfl.ConcatenationOptionsAddAxis(fb, int(o["axis"]))
        tfl.ConcatenationOptionsAddFusedActivationFunction(fb, act)
        return _OPT.ConcatenationOptions, tfl.ConcatenationOptionsEnd(fb)
    if kind == "SOFTMAX":
        tfl.SoftmaxOptionsStart(fb)
        tfl.SoftmaxOptionsAddBeta(fb, float(o["beta"]))
        return _OPT.SoftmaxOptions, tfl.SoftmaxOptionsEnd(fb)
    if kind == "STRIDED_SLICE":
        tfl.StridedSliceOptionsStart(fb)
        tfl.StridedSliceOptionsAddBeginMask(fb, int(o["begin_mask"]))
        tfl.StridedSliceOptionsAddEndMask(fb, int(o["end_mask"]))
        tfl.StridedSliceOptionsAddEllipsisMask(fb, int(o["ellipsis_mask"]))
        tfl.StridedSliceOptionsAddNewAxisMask(fb, int(o["new_axis_mask"]))
        tfl.StridedSliceOptionsAddShrinkAxisMask(fb, int(o["shrink_axis_mask"]))
        return _OPT.StridedSliceOptions, tfl.StridedSliceOptionsEnd(fb)
    if kind == "SPLIT":
        tfl.SplitOptionsStart(fb)
        tfl.SplitOptionsAddNumSplits(fb, int(o["num_splits"]))
        return _OPT.SplitOptions, tfl.SplitOptionsEnd(fb)
    if kind == "UNPACK":
        tfl.UnpackOptionsStart(fb)
        tfl.UnpackOptionsAddNum(fb, int(o["num"]))
        tfl.UnpackOptionsAddAxis(fb, int(o["axis"]))
        return _OPT.UnpackOptions, tfl.UnpackOptionsEnd(fb)
    return 0, None  # LOGISTIC, TANH, QUANTIZE, DEQUANTIZE: no options


def _offset_vector(fb, offsets) -> int:
    fb.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        fb.PrependUOffsetTRelative(off)
    return fb.EndVector()


def _int32_vector(fb, values) -> int:
    return _numpy_vector(fb, np.asarray(values, np.int32).reshape(-1))


def _numpy_vector(fb, arr: np.ndarray) -> int:
    return fb.CreateNumpyVector(np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")))
