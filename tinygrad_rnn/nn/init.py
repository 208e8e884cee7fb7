"""Initialisation as the numpy textbooks do it: normal weights scaled by 1/sqrt(fan_in), zero biases."""
import numpy as np

__all__ = ["as_rng", "scaled_normal", "zeros"]


def as_rng(rng):
    """A ``numpy.random.Generator`` from a Generator, an int seed or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, not {type(rng).__name__}")


def as_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating type such as float32 or float64, not {dtype}")
    return dtype


def scaled_normal(rng, fan_in, shape, dtype):
    """Normal(0, 1/fan_in) weights (Xavier-style, as Deep Learning from Scratch 2 uses)."""
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)
