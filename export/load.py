"""``grukit.load(source)``: one entry point for every model format grukit reads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grukit.core
from grukit.core.errors import BadInputError, GrukitError, MissingDependencyError, UnsupportedModelError
from grukit.core.limits import MAX_MODEL_BYTES, MAX_UNPACKED_BYTES, check_archive, check_file_size
from grukit.core.model import GRUModel

SUFFIXES = (".onnx", ".pt2", ".keras")
ARCHIVES = (".pt2", ".keras")  # zip files: checked before anything in them is inflated


def load(source, **kwargs) -> GRUModel:
    """Load a trained GRU network into a :class:`grukit.core.model.GRUModel`.

    source: a ``torch.nn.Module`` in memory, a GRUModel (returned as is), or a path to a ``.onnx``,
    ``.pt2`` (``torch.export.save``) or ``.keras`` (Keras 3) file.
    """
    if isinstance(source, GRUModel):
        return source
    if not isinstance(source, (str, Path)):
        try:
            import torch  # optional (grukit[torch]): only a module in memory needs it
        except ImportError:
            torch = None
        if torch is not None and isinstance(source, torch.nn.Module):
            from grukit.export.load_torch import load_torch_module  # per format: only this one imports torch

            return load_torch_module(source, **kwargs)
        raise BadInputError(f"cannot load a {type(source).__name__}: give a torch.nn.Module or a model file path")
    path = Path(source)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if not path.is_file():
        raise BadInputError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnsupportedModelError(f"{path}: unknown model format {suffix!r}; grukit reads {', '.join(SUFFIXES)}")
    check_file_size(path, MAX_MODEL_BYTES, "a model")
    if suffix in ARCHIVES:
        check_archive(path, MAX_UNPACKED_BYTES, "a model")
    try:
        model = _load_file(path, suffix, kwargs)
    except GrukitError as e:
        if path.name in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e  # every message names the file it is about
    return replace(model, source=recorded_source(path))


def recorded_source(path: Path) -> str:
    """How the exported files and the report name a model file: as it was given, except a file shipped inside
    grukit (the demo), named relative to the package, so its artifacts are the same bytes wherever grukit is
    installed."""
    shipped = (Path(grukit.core.__file__).resolve().parent.parent / "data").resolve()  # grukit/data, anywhere
    if Path(path).resolve().is_relative_to(shipped):
        return f"grukit/data/{Path(path).resolve().relative_to(shipped).as_posix()}"
    return str(path)


def _load_file(path: Path, suffix: str, kwargs: dict) -> GRUModel:
    if suffix == ".onnx":
        from grukit.export.load_onnx import load_onnx  # per format (see load_torch above)

        return load_onnx(path, **kwargs)
    if suffix == ".pt2":
        _require_torch(f"{path}: a .pt2 file")
        from grukit.export.load_pt2 import load_pt2  # per format (see load_torch above)

        return load_pt2(path, **kwargs)
    from grukit.export.load_keras import load_keras  # per format (see load_torch above)

    return load_keras(path, **kwargs)


def _require_torch(what: str) -> None:
    """MissingDependencyError naming the extra unless torch imports."""
    try:
        import torch  # noqa: F401  (optional: grukit[torch])
    except ImportError:
        raise MissingDependencyError(f"{what} needs PyTorch, an optional dependency of grukit: "
                                     "pip install 'grukit[torch]'") from None
