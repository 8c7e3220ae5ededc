"""grukit.runtime: the float reference, the fixed-point runtime, board targets and budget checks."""
