"""Small assertions shared by the Keras tests."""

import numpy as np


def assert_same_weights(a: list, b: list, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Asserts two lists of weight arrays match (exactly by default)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def weight_distance(a: list, b: list) -> float:
    """Euclidean distance between two lists of weight arrays, as one flat vector."""
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))))
