"""The files grukit writes for a model, in one place: ``grukit export`` and ``grukit deploy`` both call
``write_artifacts``, so the two commands always give the same files under the same names.

    model.onnx                      float sequence model (every model)
    model_step.onnx                 float streaming step (not for a bidirectional model)
    model_<scheme>_qdq.onnx         the quantized step in QDQ form
    model_float_step.tflite         float step; model_float_seq_T{T}.tflite over T steps
    model_<scheme>_step.tflite      the integer step (the device model); _seq_T{T}: over T steps
    grukit_model/                   the C library: src/ (the kernel and the model's constants), examples/main.c,
                                    CMakeLists.txt, cmake/arm-none-eabi.cmake, library.json, library.properties
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from grukit.core.model import GRUModel
from grukit.export.onnx_export import export_onnx_sequence, export_onnx_step
from grukit.export.onnx_qdq_export import export_onnx_qdq
from grukit.export.tflite_export import export_tflite_all, export_tflite_step_float
from grukit.firmware_ref.c_export import export_c_library

C_LIBRARY = "grukit_model"  # the C library's folder, library name and symbol prefix


def write_artifacts(model: GRUModel, qmodel, out: Path, T: int | None, c: bool = True,
                    advance: Callable[[str], None] = lambda what: None) -> dict[str, Path]:
    """Write every file that applies into ``out``; returns role -> path, in the order written.

    Roles: ``onnx_sequence``, ``onnx_step``, ``onnx_qdq``, ``tflite_float_step``, ``tflite_float_seq``,
    ``tflite_<scheme>_step``, ``tflite_<scheme>_seq``, and for the C library ``c_model_h``, ``c_model_c``
    (the model's constants) and ``c:<path in the library>`` for its other files. Without ``qmodel`` (no
    calibration data, or a bidirectional model) only the float files; without T no sequence .tflite; the C
    sources only with ``c``. ``advance(what)`` is called after each group (a progress display).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"onnx_sequence": Path(export_onnx_sequence(model, out / "model.onnx"))}
    advance("ONNX sequence")
    if model.bidirectional:
        return files
    files["onnx_step"] = Path(export_onnx_step(model, out / "model_step.onnx"))
    advance("ONNX step")
    if qmodel is not None:
        files["onnx_qdq"] = Path(export_onnx_qdq(qmodel, out / f"model_{qmodel.scheme}_qdq.onnx"))
        advance("QDQ ONNX")
    if T is None:  # no sequence length known (export without --calib or --steps): the float step only
        files["tflite_float_step"] = Path(export_tflite_step_float(model, out / "model_float_step.tflite"))
    else:
        for role, path in export_tflite_all(model, qmodel, out, T).items():
            files[f"tflite_{role}"] = Path(path)
    advance("TFLite")
    if qmodel is not None and c:
        library = out / C_LIBRARY
        model_h, model_c, *others = export_c_library(qmodel, library, C_LIBRARY)
        files["c_model_h"], files["c_model_c"] = model_h, model_c
        files.update({f"c:{path.relative_to(library)}": path for path in others})
        advance("C")
    return files
