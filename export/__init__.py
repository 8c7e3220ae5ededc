"""grukit.export: read trained models into a GRUModel and write ONNX, TFLite and C from it."""
