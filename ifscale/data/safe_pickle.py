"""A pickle loader that can only rebuild NumPy arrays.

`pickle.load` runs whatever callables a file names. The MNIST pickle needs exactly three
(the array reconstructor, `ndarray` and `dtype`); array pickles written by Python 3 also
use `_codecs.encode` or NumPy's `_frombuffer`; anything else is refused, so a tampered
file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

# (module, name) pairs the MNIST pickle needs. NumPy 2 moved `numpy.core` to `numpy._core`;
# the file, written by Python 2, names the old module.
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    # Protocol 5 array pickles rebuild from a raw buffer.
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    # Python 3 writes byte buffers in protocol-2 pickles as _codecs.encode(text, "latin1"):
    # it only turns a str into bytes.
    ("_codecs", "encode"): codecs.encode,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something other than a NumPy array."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: this file may only contain NumPy arrays"
            ) from None


def load_arrays_pickle(data: bytes):
    """Unpickles `data` allowing only NumPy arrays, tuples, lists, numbers and strings.

    Args:
      data: the raw (already decompressed) pickle bytes.

    Returns:
      The unpickled object.

    Raises:
      UnsafePickleError: the pickle references any other callable.
    """
    # latin1: the file is a Python 2 pickle whose array buffers are byte strings.
    return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
