"""Argument checks shared by the simulations: numbers in, a named ``TypeError``/``ValueError`` out.

One place decides what counts as a number, so every public function rejects
the same things: strings (NumPy would parse ``"4e11"``), booleans (``True`` is
not a FLOP budget), objects, and NaN or infinity. Messages show plain numbers
(``nan``, ``-5.0``), never ``np.float64(nan)``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def show(value) -> str:
    """A value as a user typed it: plain floats and ints, not NumPy reprs."""
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    return repr(value) if isinstance(value, (float, int)) else str(value)


def _numeric_array(name: str, value) -> np.ndarray:
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__}") from None
    if arr.dtype.kind not in "iuf":  # strings, booleans, objects, complex
        raise TypeError(f"{name} must be a number or an array of numbers, got an array of {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def as_float_array(name: str, value) -> np.ndarray:
    """``value`` as a float64 array of finite numbers, or a named error."""
    arr = _numeric_array(name, value)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {show(arr[~np.isfinite(arr)].ravel()[0])}")
    return arr


def as_positive_array(name: str, value, *, allow_zero: bool = False) -> np.ndarray:
    """``value`` as a float64 array, every entry finite and > 0 (>= 0 with ``allow_zero``)."""
    arr = _numeric_array(name, value)
    ok = np.isfinite(arr) & ((arr >= 0) if allow_zero else (arr > 0))
    if not np.all(ok):
        what = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {what} and finite, got {show(arr[~ok].ravel()[0])}")
    return arr


def as_count_array(name: str, value, *, minimum: int = 0) -> np.ndarray:
    """``value`` as a 1-D float64 array of whole numbers ``>= minimum`` (an empty sequence passes).

    Integer and whole float entries are accepted (``[3, 4.0]``); strings, booleans,
    objects (``TypeError``), other ranks, fractions, NaN and infinity (``ValueError``)
    are not.
    """
    if isinstance(value, (list, tuple)) and len(value) == 0:
        return np.zeros(0)
    arr = _numeric_array(name, value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of counts, got shape {arr.shape}")
    ok = np.isfinite(arr) & (arr >= minimum) & (arr == np.floor(arr))
    if not np.all(ok):
        raise ValueError(f"{name} must hold whole numbers >= {minimum}, got {show(arr[~ok][0])}")
    return arr


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as a Python int ``>= minimum``; booleans and floats are a ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_level(level) -> float:
    """A confidence level strictly inside (0, 1), as a float."""
    if not (isinstance(level, numbers.Real) and 0.0 < float(level) < 1.0):
        raise ValueError(f"level must be a confidence level in (0, 1), got {level!r}")
    return float(level)


def float_or_array(x):
    """Python float for 0-d results, the array otherwise."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def lookup_preset(arg: str, name, presets: dict, passes, *, expected: str, known: str = "known",
                  sort: bool = False):
    """``presets[name]`` for a preset name; an object of the type(s) ``passes`` is returned as it is.

    ``arg`` names the argument in the errors: a ``TypeError`` ("``arg`` must be
    ``expected``") for anything else than a string, a ``ValueError`` listing the
    preset names (after ``known``, sorted with ``sort``) for an unknown one.
    """
    if isinstance(name, passes):
        return name
    if not isinstance(name, str):
        raise TypeError(f"{arg} must be {expected}, got {type(name).__name__}")
    if name not in presets:
        raise ValueError(f"unknown {arg} {name!r}; {known}: {', '.join(sorted(presets) if sort else presets)}")
    return presets[name]


def check_positive(**values) -> None:
    """Each keyword's value is a real number, finite and > 0 (``TypeError``/``ValueError`` naming it)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be positive and finite, got {show(value)}")


def check_count(**values) -> None:
    """Each keyword's value is an integer (not a bool) and > 0 (``TypeError``/``ValueError`` naming it)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {show(value)}")
