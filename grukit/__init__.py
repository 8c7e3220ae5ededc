"""grukit: take a trained GRU to a microcontroller.

    import grukit
    model = grukit.load("model.onnx")       # or a torch.nn.Module, .pt2, .keras
    y = model.predict(x)                    # float NumPy reference, x [N, T, I]
    qmodel = grukit.quantize(model, calib_x, scheme="int8")
    y_int = qmodel.predict(x)               # integer inference, float in and out
"""

from grukit.errors import BadInputError, GrukitError, UnsupportedModelError
from grukit.model import GATES, Dense, GRUDirection, GRULayer, GRUModel

__version__ = "0.1.0"


def load(source, **kwargs) -> GRUModel:
    from grukit.export.load import load as _load

    return _load(source, **kwargs)


from grukit import quantize  # noqa: E402  (a callable package: grukit.quantize(model, calib_x, scheme=...))

__all__ = [
    "GATES", "Dense", "GRUDirection", "GRULayer", "GRUModel", "load", "quantize",
    "GrukitError", "UnsupportedModelError", "BadInputError", "__version__",
]
