"""grukit.quantize: calibration, weight rounding, int8 and 16x8 quantization parameters.

``grukit.quantize`` is both this package and the public function ``grukit.quantize(model, calib_x,
scheme=...)``: importing any submodule binds the package to the attribute ``quantize`` of ``grukit``, which
would shadow a plain function of that name, so the package itself is made callable.
"""

import sys
import types

from grukit.quantize.quantize import quantize_model


class _CallablePackage(types.ModuleType):
    def __call__(self, model, calib_x, scheme="int8", **kwargs):
        """Calibrate ``model`` on calib_x [N, T, I] and return a QuantizedGRUModel (``quantize_model``)."""
        return quantize_model(model, calib_x, scheme=scheme, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
