"""``grukit.load(source)``: one entry point for every model format grukit reads."""

from __future__ import annotations

from pathlib import Path

from grukit.core.errors import BadInputError, MissingDependencyError, UnsupportedModelError
from grukit.core.model import GRUModel

SUFFIXES = (".onnx", ".pt2", ".keras")


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
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from grukit.export.load_onnx import load_onnx  # per format (see load_torch above)

        return load_onnx(path, **kwargs)
    if suffix == ".pt2":
        _require_torch(f"{path}: a .pt2 file")
        from grukit.export.load_pt2 import load_pt2  # per format (see load_torch above)

        return load_pt2(path, **kwargs)
    if suffix == ".keras":
        from grukit.export.load_keras import load_keras  # per format (see load_torch above)

        return load_keras(path, **kwargs)
    raise UnsupportedModelError(f"{path}: unknown model format {suffix!r}; grukit reads {', '.join(SUFFIXES)}")


def _require_torch(what: str) -> None:
    """MissingDependencyError naming the extra unless torch imports."""
    try:
        import torch  # noqa: F401  (optional: grukit[torch])
    except ImportError:
        raise MissingDependencyError(f"{what} needs PyTorch, an optional dependency of grukit: "
                                     "pip install 'grukit[torch]'") from None
