"""Read ``.tflite`` files back: grukit's metadata record, operator codes, and what a grukit file holds
(``grukit inspect model.tflite``). The writing side is ``tflite_writer``."""

from __future__ import annotations

import json
from pathlib import Path

import tflite as tfl

from grukit.core.errors import BadInputError
from grukit.core.limits import MAX_MODEL_BYTES, check_file_size
from grukit.export.tflite_writer import GRUKIT_METADATA_NAME


def read_model(path_or_bytes):
    """The flatbuffer root of a ``.tflite`` file (a path or its bytes); BadInputError if it is not one."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        path = Path(path_or_bytes)
        if not path.is_file():
            raise BadInputError(f"no such .tflite file: {path}")
        data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise BadInputError("not a .tflite flatbuffer (file identifier TFL3 missing)")
    return tfl.Model.GetRootAs(data, 0)


def read_metadata_buffers(path_or_bytes) -> dict[str, bytes]:
    """All metadata entries of a ``.tflite`` file: name -> raw buffer bytes."""
    model = read_model(path_or_bytes)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        buf = model.Buffers(entry.Buffer())
        out[entry.Name().decode("utf-8")] = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
    return out


def read_tflite_metadata(path_or_bytes) -> dict:
    """The grukit JSON record of a ``.tflite`` file (scheme, gate variant, grukit version, ...)."""
    entries = read_metadata_buffers(path_or_bytes)
    if GRUKIT_METADATA_NAME not in entries:
        raise BadInputError(f"the .tflite file has no {GRUKIT_METADATA_NAME!r} metadata; it has {sorted(entries)}")
    try:
        return json.loads(entries[GRUKIT_METADATA_NAME].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"the {GRUKIT_METADATA_NAME!r} metadata is not JSON: {exc}") from exc


def read_operator_codes(path_or_bytes) -> list[tuple[str, int, int, int]]:
    """The operator codes of a ``.tflite`` file: (op name, builtin_code, deprecated_builtin_code, version)."""
    model = read_model(path_or_bytes)
    names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for i in range(model.OperatorCodesLength()):
        c = model.OperatorCodes(i)
        code = max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
        out.append((names.get(code, str(code)), c.BuiltinCode(), c.DeprecatedBuiltinCode(), c.Version()))
    return out


def describe_tflite(path: Path) -> str:
    """What a grukit-written .tflite holds, from its grukit metadata and its output tensor's shape.
    BadInputError naming the file if it is missing, too large, not a grukit .tflite, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    check_file_size(path, MAX_MODEL_BYTES, "a model")
    data = path.read_bytes()
    try:
        return _describe(path, data)
    except BadInputError as e:
        raise BadInputError(f"{path}: {e}") from None
    except Exception as e:  # flatbuffers follows the file's offsets as they are: a corrupt file fails anywhere
        raise BadInputError(f"{path}: not a readable grukit .tflite file, truncated or corrupt "
                            f"({type(e).__name__}: {e})") from None


def _describe(path: Path, data: bytes) -> str:
    meta = read_tflite_metadata(data)
    graph = read_model(data).Subgraphs(0)
    out_shape = [int(v) for v in graph.Tensors(graph.Outputs(0)).ShapeAsNumpy()]
    kind = meta.get("kind")
    lines = [f"{path.name}: grukit {meta.get('grukit_version')} TFLite {kind} model"
             + (f" over T={meta['T']}" if meta.get("T") else "") + f", batch {meta.get('batch')}",
             f"  scheme: {meta.get('scheme')}, gate order {meta.get('gate_order')}"]
    params = macs = 0
    for i, layer in enumerate(meta["layers"]):
        I, H = layer["input_size"], layer["hidden_size"]
        state = layer.get("state") or {}
        lines.append(f"  layer {i}: GRU input {I} -> hidden {H}, {layer['gate_variant']}"
                     + (f", state {state['dtype']} scale {state['scale']:.6g} zero point {state['zero_point']}"
                        if state else ""))
        # The same count as GRUModel.param_count / macs_per_step: W, R and both bias vectors per gate.
        params += 3 * H * I + 3 * H * H + 6 * H
        macs += 3 * H * (I + H)
    head = meta.get("head")
    if head is not None:
        where = "every step" if head["per_step"] else "last step"
        lines.append(f"  head on the {where}: output activation {head['activation']} (applied after "
                     "dequantizing, not in the file)")
        F = meta["layers"][-1]["hidden_size"]
        # Files before head chains record one dense layer, its width the output's.
        for k, dense in enumerate(head.get("layers") or [{"out_features": out_shape[-1]}]):
            O = dense["out_features"]
            between = [a for a in (dense.get("fused", "NONE"), dense.get("activation_op")) if a and a != "NONE"]
            lines.append(f"    dense {k}: {F} -> {O}" + (f", then {' '.join(between)}" if between else ""))
            params += O * F + O
            macs += O * F
            F = O
    for side in ("input", "output"):
        q = meta.get(side)
        if q:
            lines.append(f"  {side}: {q['dtype']} scale {q['scale']:.6g} zero point {q['zero_point']}")
    lines += [f"  size: {len(data):,} bytes", f"  parameters: {params:,}", f"  MACs per step: {macs:,}"]
    return "\n".join(lines)
