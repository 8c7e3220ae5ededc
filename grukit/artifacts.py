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

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from grukit.core.errors import BadInputError
from grukit.core.model import GRUModel
from grukit.export.onnx_export import export_onnx_sequence, export_onnx_step
from grukit.export.onnx_qdq_export import export_onnx_qdq
from grukit.export.tflite_export import export_tflite_all, export_tflite_step_float
from grukit.firmware_ref.c_export import export_c_library

C_LIBRARY = "grukit_model"  # the C library's folder, library name and symbol prefix


def write_artifacts(model: GRUModel, qmodel, out: Path, T: int | None, c: bool = True,
                    advance: Callable[[str], None] = lambda what: None, optimize: str = "speed") -> dict[str, Path]:
    """Write every file that applies into ``out``; returns role -> path, in the order written.

    Roles: ``onnx_sequence``, ``onnx_step``, ``onnx_qdq``, ``tflite_float_step``, ``tflite_float_seq``,
    ``tflite_<scheme>_step``, ``tflite_<scheme>_seq``, and for the C library ``c_model_h``, ``c_model_c``
    (the model's constants) and ``c:<path in the library>`` for its other files. Without ``qmodel`` (no
    calibration data, or a bidirectional model) only the float files; without T no sequence .tflite; the C
    sources only with ``c``, its constants in the ``optimize`` form (``export_c``). ``advance(what)`` is called
    after each group (a progress display).
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
        model_h, model_c, *others = export_c_library(qmodel, library, C_LIBRARY, optimize=optimize)
        files["c_model_h"], files["c_model_c"] = model_h, model_c
        files.update({f"c:{path.relative_to(library)}": path for path in others})
        advance("C")
    return files


def check_output_dir(out: Path) -> None:
    """Raise BadInputError (before any work) unless a folder can be written at ``out``: its parent there or
    able to be made (nothing is created here), and ``out`` not an existing file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: a file is in the way (the output is a folder)")
    _check_parent(out)


def check_output_file(path: Path) -> None:
    """Raise BadInputError (before any work) unless a file can be written at ``path``."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"--out {path}: a folder is in the way")
    _check_parent(path)


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    return [p for p in Path(path).parents if not p.exists()]


def _check_parent(path: Path) -> None:
    """Raise BadInputError unless ``path``'s folder exists or can be made: the nearest existing folder above it
    takes a new entry (tried with a probe folder, removed at once). Nothing is created."""
    missing = _missing_parents(path)
    base = missing[-1].parent if missing else path.parent
    if not base.is_dir():
        raise BadInputError(f"--out {path}: cannot create it ({base} is a file)")
    try:
        Path(tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=base)).rmdir()
    except OSError as e:
        raise BadInputError(f"--out {path}: cannot create it ({e.strerror or e})") from None


@contextmanager
def _parents_made(path: Path) -> Iterator[None]:
    """``path``'s missing folders made for the block; removed again if the block fails."""
    missing = _missing_parents(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"--out {path}: cannot create it ({e.strerror or e})") from None
    try:
        yield
    except BaseException:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                break  # something else was written there: not ours to remove
        raise


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to write into; when the block ends normally it replaces ``out`` (a folder
    already there is kept until then), on an error or Ctrl-C it is removed and ``out`` is left as it was. So
    ``out`` never holds half of a run's files."""
    out = Path(out)
    check_output_dir(out)
    with _parents_made(out):
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            yield work
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    work.chmod(0o755)  # mkdtemp's folder is private; the output is an ordinary folder
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / out.name)
        os.rename(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, out)


def write_file_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary path)`` beside ``path``, then move it into place: ``path`` is either the previous
    file or the complete new one."""
    path = Path(path)
    check_output_file(path)
    with _parents_made(path):
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix=path.suffix, dir=path.parent)
        os.close(handle)
        try:
            write(Path(temporary))
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
