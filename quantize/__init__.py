"""grukit.quantize: pruning, calibration, int8 and 16x8 quantization parameters."""
