"""Sample quality against the number of sampling steps: a table (JSON) and a plot (PNG).

Each row samples the same number of images from the same seed with one `SamplingSpec` (the
`--compare` items of `ddpm-eval`, `ddpm_tf.sampling.spec.parse_comparisons`)
and scores them against the real images (FID and KID on the given features), beside the
real-vs-real floor at the same sample size; the plot draws FID against the number of network calls,
one line per method, with the floor as a dashed line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_tf.evaluation import sample_quality
from ddpm_tf.features import FeatureExtractor
from ddpm_tf.sampling import SamplingSpec, generate_uint8

__all__ = ["plot_quality", "quality_against_steps", "quality_of_samplers", "write_table"]


def quality_against_steps(
    model: Any,
    specs: Sequence[SamplingSpec],
    real: np.ndarray,
    extractor: FeatureExtractor,
    **settings: Any,
) -> list[dict[str, Any]]:
    """One row per spec of `model`: `quality_of_samplers` with each spec's method as its name."""
    return quality_of_samplers([(s.method, model, s) for s in specs], real, extractor, **settings)


def quality_of_samplers(
    samplers: Sequence[tuple[str, Any, SamplingSpec]],
    real: np.ndarray,
    extractor: FeatureExtractor,
    *,
    reference: np.ndarray | None = None,
    num_samples: int,
    seed: int | tuple[int, int] = 0,
    batch_size: int = 256,
    progress: Callable[[SamplingSpec], Callable[[int], None]] | None = None,
    on_samples: Callable[[str, SamplingSpec, np.ndarray], None] | None = None,
    **conditioning: Any,
) -> list[dict[str, Any]]:
    """One row per (name, model, spec): method (the name: a line of `plot_quality`), steps,
    num_steps (network calls), FID, KID, the floor, seconds. The models may differ: a teacher's
    methods beside its distilled students (`name` "distilled"), all from the same seed.

    `conditioning` are `generate_uint8`'s labels [num_samples], guidance_scale, classifier and
    classifier_scale. `progress(spec)` gives a per-batch callback for that spec's sampling;
    `on_samples(name, spec, images)` sees each row's uint8 samples (e.g. to save a grid).
    """
    rows = []
    for name, model, spec in samplers:
        began = time.perf_counter()
        images = generate_uint8(
            model,
            num_samples,
            seed,
            spec,
            batch_size=batch_size,
            progress=None if progress is None else progress(spec),
            **conditioning,
        )
        seconds = time.perf_counter() - began
        if on_samples is not None:
            on_samples(name, spec, images)
        scores = sample_quality(real, images, extractor, reference_uint8=reference)
        rows.append(
            {
                "method": name,
                "steps": spec.steps.text,
                "num_steps": model.diffusion.with_steps(spec.steps).num_timesteps,
                "spec": spec.to_dict(),
                "fid": scores["fid"],
                "kid_mean": scores["kid_mean"],
                "fid_floor": scores["fid_floor"],
                "kid_floor": scores["kid_floor"],
                "num_samples": num_samples,
                "seconds": round(seconds, 1),
            }
        )
    return rows


def plot_quality(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """FID against the number of sampling steps (log scale), one line per method, floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method in dict.fromkeys(row["method"] for row in rows):
        points = sorted((r["num_steps"], r["fid"]) for r in rows if r["method"] == method)
        axes.plot(*zip(*points, strict=True), marker="o", label=method)
    floor = float(np.mean([row["fid_floor"] for row in rows]))
    axes.axhline(floor, color="gray", linestyle="--", label=f"real vs real ({floor:.3g})")
    axes.set_xscale("log")
    axes.set_xlabel("sampling steps (network calls)")
    axes.set_ylabel("FID")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_table(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The rows as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(list(rows), indent=2) + "\n")
    return path
