import os

import numpy as np
import pytest

# Tests run under pytest-xdist on every core already: the integer runtime stays in each test's process unless
# a test asks for worker processes (tests/test_workers.py). An explicit setting is kept.
os.environ.setdefault("GRUKIT_WORKERS", "1")
# Keras is a test dependency (it writes the .keras test files); TensorFlow is not installed, so it runs on torch.
# Set before any test module imports keras.
os.environ.setdefault("KERAS_BACKEND", "torch")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
