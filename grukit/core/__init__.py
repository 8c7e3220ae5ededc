"""grukit's core: what every stage stands on. It imports nothing of the stages.

- ``model``: the model representation (GRU layers, dense head), loaded by ``export``, read by every stage.
- ``float_gru``: what that model computes, the float reference (calibration observes it, loaders check
  against it, the integer runtimes are scored against it).
- ``graph``: the integer GRU step as a graph of TFLite-Micro ops, walked by every backend.
- ``scheme``: the quantization schemes (int8, 16x8) as records.
- ``qparams``: quantization parameters and each op's prepared integer parameters.
- ``fixedpoint``: the named rounding and requantization primitives (gemmlowp, TFLite).
- ``ops_int``: the integer semantics of every op (TFLite-Micro's reference kernels).
- ``quantized``: the quantized model and its parts.
- ``errors``: the error types the CLI turns into one line and exit 2.
- ``version``: grukit's version.

The stages (``grukit.export``, ``grukit.quantize``, ``grukit.runtime``, ``grukit.firmware_ref``) import the
core and their own files only; ``grukit.cli`` and ``grukit.pipeline`` wire them together.
"""
