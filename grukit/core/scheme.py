"""Quantization schemes: which integer widths a quantized GRU uses, written down once.

A scheme is a record, not a string: code asks ``qmodel.scheme is S16X8`` or reads ``scheme.bias_dtype``
instead of comparing names. ``str(scheme)`` is the name users write (``"int8"``, ``"16x8"``).

- ``int8``: int8 activations (asymmetric) and hidden state (symmetric), int8 symmetric per-channel weights,
  int32 biases; C functions ``_s8``.
- ``16x8``: int16 symmetric activations and hidden state, int8 weights, int64 biases (TFLite's 16x8
  convention); C functions ``_s16``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grukit.core.errors import BadInputError


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme. ``activation`` names the dtype of activations and state ("int8" or "int16");
    ``c_suffix`` the width suffix of its C and NumPy kernel names ("s8" or "s16")."""

    name: str
    activation: str
    bias: str
    c_suffix: str

    @property
    def activation_dtype(self) -> np.dtype:
        return np.dtype(self.activation)

    @property
    def bias_dtype(self) -> np.dtype:
        return np.dtype(self.bias)

    @property
    def activation_bytes(self) -> int:
        return self.activation_dtype.itemsize

    @property
    def bias_bytes(self) -> int:
        return self.bias_dtype.itemsize

    def __str__(self) -> str:
        return self.name


INT8 = Scheme("int8", activation="int8", bias="int32", c_suffix="s8")
S16X8 = Scheme("16x8", activation="int16", bias="int64", c_suffix="s16")
SCHEMES = (INT8, S16X8)
SCHEME_NAMES = tuple(s.name for s in SCHEMES)


def scheme_named(scheme: str | Scheme) -> Scheme:
    """The Scheme for a name users write ("int8", "16x8"), or the Scheme itself; BadInputError otherwise."""
    if isinstance(scheme, Scheme):
        return scheme
    for s in SCHEMES:
        if s.name == scheme:
            return s
    raise BadInputError(f"unknown scheme {scheme!r}; use one of {', '.join(SCHEME_NAMES)}")
