"""Comparison of an artifact's outputs with TensorFlow's, against stated tolerances.

Float outputs (the denoiser) must agree within an absolute tolerance: float32 artifacts differ from
TensorFlow only by the order of float operations in each runtime's kernels (measured ~1e-6).
uint8 images (the samplers) are compared in levels: the same rounding differences, carried through
the sampling loop, move a pixel lying near a rounding boundary of (x + 1) * 127.5 by one level, so a
float32 sampler must have every pixel within `max_levels` and at most `max_fraction_differing` of
pixels different at all. Quantized artifacts (float16 / dynamic-range weights) change the network
itself; their tolerances bound the measured error rather than prove equality: a dynamic-range
sampler's pixels are bounded in bulk (the 99th percentile and the mean of |diff|), not one by one.
"""

from __future__ import annotations

import dataclasses

import numpy as np


class ExportVerificationError(RuntimeError):
    """An exported artifact does not reproduce TensorFlow's outputs within tolerance."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Float outputs: max |diff| <= atol. uint8 images: max |diff| <= max_levels, its 99th
    percentile <= max_p99_levels, the fraction of differing pixels <= max_fraction_differing and
    the mean |diff| <= max_mean_levels."""

    atol: float = 1e-4
    max_levels: int = 2
    max_fraction_differing: float = 0.01
    max_mean_levels: float = 1.0
    max_p99_levels: float = 255.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Quantized bounds are about 3-4x the errors measured on a trained tiny_8: float16 denoiser
# 3.8e-3; dynamic-range denoiser 1.3e-2; its sampler against the float one (16 images x 8 seeds,
# DDIM 6 and 50, ancestral 50, DPM-Solver++ 6 steps): 99th percentile of |diff| 1-3 levels, mean
# 0.32-0.66 levels, a third to a half of the pixels off, the worst by 12 levels.
TOLERANCES = {
    "none": Tolerance(),
    "float16": Tolerance(atol=2e-2),
    "dynamic": Tolerance(
        atol=5e-2,
        max_levels=255,
        max_fraction_differing=1.0,
        max_mean_levels=2.0,
        max_p99_levels=8.0,
    ),
}


def compare(reference: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance) -> dict:
    """Per-output error measures and whether all are within `tol`: {"passed", "outputs", "problems"}."""
    result = {"passed": True, "outputs": {}, "problems": []}
    for name, ref in reference.items():
        if name not in got:
            result["problems"].append(f"output {name!r} is missing (got {sorted(got)})")
            continue
        out = np.asarray(got[name])
        if out.shape != ref.shape or out.dtype != ref.dtype:
            result["problems"].append(
                f"output {name!r} is {out.dtype}{list(out.shape)}, expected {ref.dtype}{list(ref.shape)}"
            )
            continue
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        if ref.dtype == np.uint8:
            measures = {
                "max_abs_levels": int(diff.max(initial=0)),
                "fraction_differing": float(np.mean(diff > 0)) if diff.size else 0.0,
                "mean_abs_levels": float(diff.mean()) if diff.size else 0.0,
                "p99_abs_levels": float(np.quantile(diff, 0.99)) if diff.size else 0.0,
            }
            ok = (
                measures["max_abs_levels"] <= tol.max_levels
                and measures["p99_abs_levels"] <= tol.max_p99_levels
                and measures["fraction_differing"] <= tol.max_fraction_differing
                and measures["mean_abs_levels"] <= tol.max_mean_levels
            )
        else:
            measures = {"max_abs_error": float(diff.max(initial=0.0))}
            ok = bool(np.isfinite(out).all()) and measures["max_abs_error"] <= tol.atol
        result["outputs"][name] = measures
        if not ok:
            result["problems"].append(f"output {name!r}: {measures} exceeds {tol.as_dict()}")
    result["passed"] = not result["problems"]
    return result
