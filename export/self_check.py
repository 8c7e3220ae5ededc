"""The load-time self check every loader runs: the source framework and grukit must compute the same thing.

A loader reads weights and structure; what the user trained is defined by the framework that runs it. If
the framework's output on random input differs from grukit's float reference, the model holds something the
loader did not capture, and it is refused rather than silently approximated.
"""

from __future__ import annotations

import numpy as np

from grukit.core.errors import UnsupportedModelError

# float32 framework vs float32 NumPy on random inputs: summation order differs, nothing else.
SELF_CHECK_ATOL = 1e-4


def require_agreement(got: np.ndarray, ours: np.ndarray, who: str, what: str) -> None:
    """Raise UnsupportedModelError unless got (the framework's output) equals ours within SELF_CHECK_ATOL.

    who: the framework and the thing it ran ("path: onnxruntime"); what: the object grukit cannot represent.
    """
    got, ours = np.asarray(got), np.asarray(ours)
    if got.shape == ours.shape and np.allclose(got, ours, atol=SELF_CHECK_ATOL, rtol=0):
        return
    diff = f", max difference {np.max(np.abs(got - ours)):.3g}" if got.shape == ours.shape else ""
    raise UnsupportedModelError(
        f"{who} and grukit disagree (output {got.shape} vs {ours.shape}{diff}); grukit cannot represent {what}"
    )
