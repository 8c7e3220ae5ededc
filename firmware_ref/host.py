"""The C kernel on the host over real data: ``run_c_host(qmodel, x_q)`` returns what ``qmodel.run_int``
returns, computed by firmware_ref's C (the generated model + the fused kernel, built with the host cc)."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from grukit.core.errors import BadInputError
from grukit.firmware_ref.build import (HOST_RUNNER_SOURCE, KERNEL_HEADERS, KERNEL_SOURCES, RUN_TIMEOUT_S,
                                       FirmwareBuildError, _sources, build_host, run_program)
from grukit.firmware_ref.c_export import export_c

_HOST_BUILD_ROOT: Path | None = None


def _host_build_root() -> Path:
    """One temporary directory per process for compiled host models (removed at exit)."""
    global _HOST_BUILD_ROOT
    if _HOST_BUILD_ROOT is None:
        _HOST_BUILD_ROOT = Path(tempfile.mkdtemp(prefix="grukit-c-host-"))
        atexit.register(shutil.rmtree, _HOST_BUILD_ROOT, ignore_errors=True)
    return _HOST_BUILD_ROOT


def _host_runner(qmodel, sparse: bool, sanitize: bool, optimize: str) -> Path:
    """The host_runner executable for qmodel, compiled on first use. Keyed by the generated C, the kernel
    sources and the build kind, so the same model is compiled once per process and an edited kernel is
    rebuilt."""
    root = _host_build_root()
    with tempfile.TemporaryDirectory(dir=root) as gen:
        paths = export_c(qmodel, gen, sparse=sparse, optimize=optimize)
        digest = hashlib.sha256(b"sanitize" if sanitize else b"")
        for path in (*paths[:2], *_sources(*KERNEL_SOURCES, HOST_RUNNER_SOURCE), *_sources(*KERNEL_HEADERS)):
            digest.update(Path(path).read_bytes())
        build = root / digest.hexdigest()[:20]
        exe = build / "host_runner"
        if exe.is_file():
            return exe
        build.mkdir(exist_ok=True)
        for path in paths[:2]:
            shutil.copy(path, build / Path(path).name)
    model_h = build / "grukit_model.h"
    built = build_host([*_sources(*KERNEL_SOURCES, HOST_RUNNER_SOURCE), build / "grukit_model.c"],
                       build / "host_runner.tmp", defines={"GRUKIT_MODEL_HEADER": f'"{model_h}"'},
                       sanitize=sanitize)
    built.replace(exe)  # atomic: a concurrent caller sees either no runner or a complete one
    return exe


def run_c_host(qmodel, x_q: np.ndarray, sparse: bool = True, sanitize: bool = False,
               optimize: str = "speed") -> tuple[np.ndarray, list[np.ndarray]]:
    """(y_q, states) of the C kernel on the host for integer inputs x_q [N, T, I] (or [T, I]).

    The model's generated C (``export_c``) and firmware_ref's fused kernel are compiled with the host cc
    (strict flags, -O2) once per model and process, then run over every sequence, the state reset before
    each. Returns what ``qmodel.run_int(x_q)`` returns: y_q [N, O] (last-step model) or [N, T, O] (per-step),
    and the states of each layer [N, T, H], in the model's integer dtypes. sparse: as export_c's (False: every
    product dense); optimize: as export_c's ("size": the kernel's size form). sanitize: built with UBSan and ASan, any undefined behaviour or bad access ending the run
    with an error (FirmwareBuildError). Raises BadInputError for an input of the wrong dtype or shape, FirmwareBuildError when
    there is no host cc or the build fails."""
    x_q = np.asarray(x_q)
    if x_q.ndim == 2:
        x_q = x_q[None]
    dtype = qmodel.input_q.np_dtype
    input_size = qmodel.layers[0].input_size
    if x_q.dtype != dtype:
        raise BadInputError(f"run_c_host: integer input must be {np.dtype(dtype).name}, got {x_q.dtype}")
    if x_q.ndim != 3 or x_q.shape[2] != input_size or x_q.shape[1] < 1:
        raise BadInputError(f"run_c_host: input must be [N, T, {input_size}] with T >= 1, got {list(x_q.shape)}")
    n, t, _ = x_q.shape
    exe = _host_runner(qmodel, sparse, sanitize, optimize)
    header = np.array([n, t], np.int32).tobytes()
    raw = run_program([exe], "host_runner", RUN_TIMEOUT_S, stdin=header + x_q.astype(dtype).tobytes(),
                      binary=True)
    sizes = [layer.hidden_size for layer in qmodel.layers]
    outputs = qmodel.output_size
    y_rows = t if qmodel.per_step else 1
    per_sequence = t * sum(sizes) + y_rows * outputs
    values = np.frombuffer(raw, dtype=dtype)  # state, x and y share the scheme's width
    if values.size != n * per_sequence:
        raise FirmwareBuildError(f"host_runner wrote {values.size} values, expected {n * per_sequence}")
    values = values.reshape(n, per_sequence)
    state_block = values[:, : t * sum(sizes)].reshape(n, t, sum(sizes))
    bounds = np.cumsum([0, *sizes])
    states = [state_block[:, :, a:b].astype(layer.qparams["h"].np_dtype)
              for a, b, layer in zip(bounds[:-1], bounds[1:], qmodel.layers)]
    y = values[:, t * sum(sizes):].reshape(n, y_rows, outputs).astype(qmodel.output_q.np_dtype)
    return (y if qmodel.per_step else y[:, 0]), states


