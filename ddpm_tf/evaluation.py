"""Sample quality: Frechet distance (FID) and kernel inception distance (KID) on image features.

Both compare two sets of feature vectors [N, D] (from a :mod:`ddpm_tf.features` extractor) in
float64. FID fits a Gaussian to each set and takes the Frechet (2-Wasserstein) distance
``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``; it is biased upwards at small N. KID is the
unbiased estimate of the squared MMD with the kernel ``k(x, y) = (x.y / D + 1)^3``, averaged over
random subsets; its expectation is 0 when both sets come from one distribution. Because a score
means little without knowing its value for real data at the same sample size, :func:`real_floor`
measures both between two sets of real images, and :func:`sample_quality` reports it beside the
score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from ddpm_tf.checks import check_int
from ddpm_tf.errors import InputError, InputTypeError
from ddpm_tf.features import ClassifierFeatures, FeatureExtractor, InceptionFeatures
from ddpm_tf.pixels import to_unit_range

__all__ = [
    "ClassifierFeatures",
    "FeatureExtractor",
    "InceptionFeatures",
    "fid_from_features",
    "frechet_distance",
    "kid_from_features",
    "mmd2_unbiased",
    "real_floor",
    "sample_quality",
]

SYMMETRY_TOLERANCE = 1e-6
"""Relative asymmetry |S - S^T| / max|S| above which a covariance is rejected."""

PSD_TOLERANCE = 1e-6
"""Relative negative eigenvalue -lambda_min / lambda_max above which a covariance is rejected."""


def _as_vector(value: object, arg: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise InputError(f"{arg} must be a mean vector of shape [D], got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise InputError(f"{arg} contains NaN or infinite values")
    return v


def _as_covariance(value: object, dim: int, arg: str) -> np.ndarray:
    s = np.asarray(value, dtype=np.float64)
    if s.shape != (dim, dim):
        raise InputError(
            f"{arg} must be a covariance of shape [D, D] = [{dim}, {dim}] matching the mean, "
            f"got shape {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise InputError(f"{arg} contains NaN or infinite values")
    scale = max(float(np.abs(s).max()), np.finfo(np.float64).tiny)
    asymmetry = float(np.abs(s - s.T).max()) / scale
    if asymmetry > SYMMETRY_TOLERANCE:
        raise InputError(
            f"{arg} is not symmetric (max |S - S^T| / max |S| = {asymmetry:.3g}); pass a "
            "covariance matrix such as np.cov(features, rowvar=False)"
        )
    return (s + s.T) / 2


def _psd_eigh(s: np.ndarray, arg: str, eigvals_only: bool = False) -> Any:
    """Eigenvalues (and, unless ``eigvals_only``, eigenvectors) of a symmetric PSD matrix, with
    round-off negatives set to 0. LAPACK's divide-and-conquer ``syevd`` via SciPy, which is
    several times faster than NumPy's ``eigh`` on 2048 x 2048 matrices here.
    """
    result = scipy.linalg.eigh(s, eigvals_only=eigvals_only, driver="evd")
    eigvals = result if eigvals_only else result[0]
    top = max(float(eigvals[-1]), 0.0)
    if eigvals[0] < -PSD_TOLERANCE * top - np.finfo(np.float64).tiny:
        raise InputError(
            f"{arg} is not positive semi-definite (smallest eigenvalue {eigvals[0]:.3g}, largest "
            f"{top:.3g}); pass a covariance matrix"
        )
    eigvals = np.clip(eigvals, 0.0, None)
    return eigvals if eigvals_only else (eigvals, result[1])


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2 [D, D]; see :func:`frechet_distance`."""
    try:  # S1 positive definite: its Cholesky factor
        factor = scipy.linalg.cholesky(sigma1, lower=True)
    except np.linalg.LinAlgError:  # singular (or indefinite): F = V diag(sqrt(lambda))
        eigvals, eigvecs = _psd_eigh(sigma1, "sigma1")
        factor = eigvecs * np.sqrt(eigvals)
        _psd_eigh(sigma2, "sigma2", eigvals_only=True)
    middle = factor.T @ sigma2 @ factor
    return float(np.sqrt(_psd_eigh((middle + middle.T) / 2, "sigma2", eigvals_only=True)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2): means [D], covariances [D, D].

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``, in squared feature units.

    The trace term: for any factor S1 = F F^T, S1 S2 = F (F^T S2) and F^T S2 F = (F^T S2) F have
    the same eigenvalues, so ``tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(F^T S2 F))``, and
    ``F^T S2 F`` is symmetric positive semi-definite: one symmetric eigenvalue problem. F is the
    Cholesky factor of S1, or ``V diag(sqrt(lambda))`` from S1's eigen-decomposition when S1 is
    singular (N <= D, dead ReLU features). This avoids the non-symmetric ``scipy.linalg.sqrtm``,
    which is several times slower, can return complex parts and needs an ``eps * I`` retry on
    singular covariances; here those are exact cases (eigenvalues clipped at 0 only against
    round-off). With S1 positive definite, F^T S2 F has the signs of S2's eigenvalues (Sylvester),
    so an indefinite S2 is caught there. Round-off below 0 in the result is clipped to 0.

    Raises:
        ValueError: shapes that do not match, non-finite values, a non-symmetric or clearly
            indefinite covariance.
    """
    mu1, mu2 = _as_vector(mu1, "mu1"), _as_vector(mu2, "mu2")
    if mu1.shape != mu2.shape:
        raise InputError(
            f"mu1 and mu2 must have the same shape [D], got {mu1.shape} and {mu2.shape}"
        )
    dim = mu1.shape[0]
    sigma1 = _as_covariance(sigma1, dim, "sigma1")
    sigma2 = _as_covariance(sigma2, dim, "sigma2")
    diff = mu1 - mu2
    distance = (
        float(diff @ diff)
        + float(np.trace(sigma1) + np.trace(sigma2))
        - 2.0 * _trace_sqrt_product(sigma1, sigma2)
    )
    return max(distance, 0.0)


def _as_features(value: object, arg: str, min_rows: int = 2) -> np.ndarray:
    f = np.asarray(value)
    if f.ndim != 2 or f.shape[1] == 0:
        raise InputError(f"{arg} must be features of shape [N, D], got shape {f.shape}")
    if not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
        raise InputTypeError(f"{arg} must be real numbers, got dtype {f.dtype}")
    if f.shape[0] < min_rows:
        raise InputError(
            f"{arg} has {f.shape[0]} rows but at least {min_rows} are needed (a covariance or an "
            "unbiased kernel estimate needs two samples); pass more images"
        )
    f = f.astype(np.float64)
    if not np.all(np.isfinite(f)):
        raise InputError(f"{arg} contains NaN or infinite values")
    return f


def _check_same_dim(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"{names} must have the same feature size D, got {a.shape[1]} and {b.shape[1]}; "
            "extract both with the same feature extractor"
        )


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets [N_a, D] and [N_b, D] (N >= 2 each), in float64.

    Means and unbiased (N - 1) covariances of each set go into :func:`frechet_distance`.
    """
    a = _as_features(feats_a, "feats_a")
    b = _as_features(feats_b, "feats_b")
    _check_same_dim(a, b, "feats_a and feats_b")
    return frechet_distance(
        a.mean(axis=0), np.cov(a, rowvar=False), b.mean(axis=0), np.cov(b, rowvar=False)
    )


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / D + 1)^3 for rows x [M, D], y [N, D] -> [M, N]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples x [M, D] and y [N, D] (M, N >= 2), cubic polynomial kernel.

    ``sum_{i != j} k(x_i, x_j) / (M (M - 1)) + sum_{i != j} k(y_i, y_j) / (N (N - 1))
    - 2 sum_{i, j} k(x_i, y_j) / (M N)``.
    """
    x = _as_features(x, "x")
    y = _as_features(y, "y")
    _check_same_dim(x, y, "x and y")
    m, n = x.shape[0], y.shape[0]
    k_xx = _polynomial_kernel(x, x)
    k_yy = _polynomial_kernel(y, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * _polynomial_kernel(x, y).mean())


def kid_from_features(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between feature sets [N_a, D] and [N_b, D]: mean and standard deviation (ddof 0) of
    :func:`mmd2_unbiased` over ``num_subsets`` random subsets.

    Each subset draws ``min(subset_size, N_a, N_b)`` rows without replacement from each set,
    from ``numpy.random.default_rng(seed)``. When that is all of both sets, every subset is the
    same, so the estimate is computed once and the standard deviation is 0 (it then says nothing
    about the estimate's uncertainty). Cost: ``3 * num_subsets * subset_size^2 * D``
    multiply-adds (about 6e11 for the defaults with D = 2048; its time: docs/benchmarks.md).
    """
    a = _as_features(feats_a, "feats_a")
    b = _as_features(feats_b, "feats_b")
    _check_same_dim(a, b, "feats_a and feats_b")
    num_subsets = check_int(num_subsets, "num_subsets", 1)
    size = min(check_int(subset_size, "subset_size", 2), a.shape[0], b.shape[0])
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    if size == a.shape[0] == b.shape[0]:  # every subset is the whole of both sets
        return mmd2_unbiased(a, b), 0.0
    values = np.array(
        [
            mmd2_unbiased(
                a[rng.choice(a.shape[0], size, replace=False)],
                b[rng.choice(b.shape[0], size, replace=False)],
            )
            for _ in range(num_subsets)
        ]
    )
    return float(values.mean()), float(values.std())


def real_floor(
    real_feats: np.ndarray,
    reference_feats: np.ndarray | None = None,
    *,
    size: int | None = None,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """FID and KID between two sets of real images: what a perfect generator would score.

    With ``reference_feats`` (e.g. training images, while ``real_feats`` are the test images the
    samples are compared with): ``size`` rows (default ``N_real``, at most ``N_reference``) drawn
    from the reference without replacement, scored against all of ``real_feats``
    (``floor_method="reference_vs_real"``). Pass ``size`` = the number of generated samples so the
    floor is measured at the sample size of the score.

    Without it: ``real_feats`` split at random into two disjoint halves of ``N // 2`` and
    ``N - N // 2`` rows (``floor_method="split_halves"``). FID is biased upwards at small N, so
    this floor, taken at half the size, somewhat overstates the floor at the full size.

    Returns:
        dict(fid_floor, kid_floor, kid_floor_std, floor_method, floor_sizes=[n_a, n_b]).
    """
    real = _as_features(real_feats, "real_feats")
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    if reference_feats is None:
        if real.shape[0] < 4:
            raise InputError(
                f"real_feats has {real.shape[0]} rows; splitting into halves needs at least 4"
            )
        order = rng.permutation(real.shape[0])
        half = real.shape[0] // 2
        first, second = real[order[:half]], real[order[half:]]
        method = "split_halves"
    else:
        reference = _as_features(reference_feats, "reference_feats")
        _check_same_dim(reference, real, "reference_feats and real_feats")
        size = real.shape[0] if size is None else check_int(size, "size", 2)
        size = min(size, reference.shape[0])
        first = reference[rng.choice(reference.shape[0], size, replace=False)]
        second = real
        method = "reference_vs_real"
    kid_mean, kid_std = kid_from_features(
        first, second, num_subsets=num_subsets, subset_size=subset_size, seed=seed
    )
    return {
        "fid_floor": fid_from_features(first, second),
        "kid_floor": kid_mean,
        "kid_floor_std": kid_std,
        "floor_method": method,
        "floor_sizes": [int(first.shape[0]), int(second.shape[0])],
    }


def sample_quality(
    real_uint8: np.ndarray,
    fake_uint8: np.ndarray,
    extractor: FeatureExtractor,
    *,
    reference_uint8: np.ndarray | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """FID and KID of generated images against real ones, with the real-vs-real floor.

    Args:
        real_uint8: real (test) images [N_real, H, W, C], uint8 (or floats in [-1, 1]).
        fake_uint8: generated images [N_fake, H, W, C], same format.
        extractor: a :class:`FeatureExtractor`, e.g. ``ClassifierFeatures(path)``.
        reference_uint8: optional second set of real images (e.g. the training split) for the
            floor, see :func:`real_floor`: ``N_fake`` of them (drawn with ``seed``, so only those
            are passed through the extractor) against ``real_uint8``. Default: two halves of
            ``real_uint8``. The reference floor matches the score's sample sizes; prefer it.
        kid_subsets, kid_subset_size: KID subsets and their size (capped at the smaller set).
        seed: seeds the KID subsets and the floor's split or draw.

    Returns:
        A JSON-serializable dict: fid, kid_mean, kid_std, fid_floor, kid_floor, kid_floor_std,
        floor_method, floor_sizes, num_real, num_fake, features (extractor name), feature_dim,
        kid_subsets, kid_subset_size (as used).
    """
    if not isinstance(extractor, FeatureExtractor):
        raise InputTypeError(
            f"extractor must be a FeatureExtractor (ClassifierFeatures, InceptionFeatures), got "
            f"{type(extractor).__name__}"
        )
    named = {"real_uint8": real_uint8, "fake_uint8": fake_uint8}
    if reference_uint8 is not None:
        named["reference_uint8"] = reference_uint8
    images = {arg: to_unit_range(value, arg) for arg, value in named.items()}
    shapes = {arg: x.shape[1:] for arg, x in images.items()}
    if len(set(shapes.values())) != 1:
        raise InputError(f"all images must have the same [H, W, C], got {shapes}")
    min_real = 2 if reference_uint8 is not None else 4
    for arg, minimum in (("real_uint8", min_real), ("fake_uint8", 2), ("reference_uint8", 2)):
        if arg in images and images[arg].shape[0] < minimum:
            raise InputError(
                f"{arg} has {images[arg].shape[0]} images; at least {minimum} are needed"
            )
    check_int(kid_subsets, "kid_subsets", 1)
    check_int(kid_subset_size, "kid_subset_size", 2)
    check_int(seed, "seed", 0)

    if "reference_uint8" in images:  # only the rows the floor uses go through the extractor
        reference = images["reference_uint8"]
        size = min(images["fake_uint8"].shape[0], reference.shape[0])
        rows = np.random.default_rng(seed).choice(reference.shape[0], size, replace=False)
        images["reference_uint8"] = reference[np.sort(rows)]
    feats = {arg: extractor(x) for arg, x in images.items()}
    real, fake = feats["real_uint8"], feats["fake_uint8"]
    kid_mean, kid_std = kid_from_features(
        fake, real, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    floor = real_floor(
        real,
        feats.get("reference_uint8"),
        size=fake.shape[0],
        num_subsets=kid_subsets,
        subset_size=kid_subset_size,
        seed=seed,
    )
    return {
        "fid": fid_from_features(fake, real),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        **floor,
        "num_real": int(real.shape[0]),
        "num_fake": int(fake.shape[0]),
        "features": extractor.name,
        "feature_dim": int(extractor.dim),
        "kid_subsets": int(kid_subsets),
        "kid_subset_size": int(min(kid_subset_size, real.shape[0], fake.shape[0])),
    }
