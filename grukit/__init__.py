"""grukit: take a trained GRU to a microcontroller.

    import grukit
    model = grukit.load("model.onnx")       # or a torch.nn.Module, .pt2, .keras
    y = model.predict(x)                    # float NumPy reference, x [N, T, I]
    qmodel = grukit.quantize(model, calib_x, scheme="int8")
    y_int = qmodel.predict(x)               # integer inference, float in and out

This module is the library's front door and part of the wiring layer (with ``grukit.cli`` and
``grukit.pipeline``): it re-exports the core's types and connects the stages (``load`` is
``grukit.export``'s, ``quantize`` is ``grukit.quantize``'s, and a quantized model runs on
``grukit.runtime``).
"""

from grukit.core.errors import BadInputError, GrukitError, MissingDependencyError, UnsupportedModelError
from grukit.core.model import GATES, Dense, GRUDirection, GRULayer, GRUModel, Head
from grukit.core.quantized import QuantizedGRUModel, use_executor
from grukit.core.scheme import INT8, S16X8, SCHEME_NAMES, Scheme
from grukit.core.version import __version__
from grukit.export.load import load


def _integer_runtime():
    # Imported on first use, not with grukit: numba and the compiled plans take about 0.5 s to import.
    from grukit.runtime import executor

    return executor


use_executor(_integer_runtime)

from grukit import quantize  # noqa: E402  (a callable package: grukit.quantize(model, calib_x, scheme=...))
from grukit.quantize.prune import prune  # noqa: E402


def prune_and_fine_tune(source, x, y, ratio: float, **kwargs):
    """Gradual structured pruning with recovery training on (x, y) (``grukit.quantize.finetune``): source is
    anything ``load`` takes (an ``nn.Module``, a file) or a GRUModel. Returns a FineTuneResult: ``.model``
    (the pruned GRUModel), ``.module`` (it as a trainable torch module), ``.history``."""
    from grukit.quantize.finetune import fine_tune_prune  # imports torch: only when asked for

    model = source if isinstance(source, GRUModel) else load(source)
    return fine_tune_prune(model, x, y, ratio, **kwargs)


__all__ = [
    "GATES", "Dense", "GRUDirection", "GRULayer", "GRUModel", "Head", "QuantizedGRUModel", "Scheme", "INT8", "S16X8",
    "SCHEME_NAMES", "load", "quantize", "prune", "prune_and_fine_tune", "GrukitError", "UnsupportedModelError", "BadInputError",
    "MissingDependencyError", "__version__",
]
