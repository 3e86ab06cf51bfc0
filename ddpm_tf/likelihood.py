"""Bits/dim of a trained model over a set of images: the exact variational bound, batch by batch.

`GaussianDiffusion.calc_bpd_loop` gives the bound of one batch (L_T + sum of L_t + the decoder L_0,
one network call per step). `bits_per_dim` runs it over any number of uint8 images and reports the
mean with its standard error and the prior and decoder parts. The compiled loop is kept per model
(and weights, XLA choice) and traced once per batch size, the last batch padded to the others: a
training run that measures the bound every N steps compiles it once, not at every evaluation.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from ddpm_tf import rng
from ddpm_tf.checks import check_int
from ddpm_tf.errors import InputError
from ddpm_tf.pixels import scale_to_unit

__all__ = ["bits_per_dim", "even_batch"]

# model -> {(use_ema, jit_compile): compiled loop}; entries go with their model.
_LOOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _bound_loop(model: Any, use_ema: bool, jit_compile: bool) -> Callable:
    """The compiled bound of one batch, (x [B, H, W, C] in [-1, 1], seed) -> dict of [B] tensors."""
    loops = _LOOPS.setdefault(model, {})
    key = (bool(use_ema), bool(jit_compile))
    if key not in loops:

        def loop(x, seed):
            labels = None
            if model.num_classes is not None:  # unconditional: the null label
                labels = tf.fill(tf.shape(x)[:1], model.num_classes)
            denoise = model.denoiser(labels=labels, use_ema=use_ema)
            return model.diffusion.bpd_loop_graph(denoise, x, seed)

        loops[key] = tf.function(loop, jit_compile=jit_compile, autograph=False)
    return loops[key]


def even_batch(count: int, batch_size: int) -> int:
    """The batch that covers `count` items in the fewest batches of at most `batch_size`, with the
    least padding of the last: ceil(count / ceil(count / batch_size))."""
    batches = -(-count // batch_size)
    return -(-count // batches)


def bits_per_dim(
    model: Any,
    images: np.ndarray,
    batch_size: int = 250,
    *,
    seed: rng.SeedLike = 0,
    use_ema: bool = True,
    jit_compile: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float | int | None]:
    """Mean of the exact bound over uint8 `images` [N, H, W, C] for a `DiffusionModel`, in bits/dim.

    Class-conditional models are measured unconditionally (the null label). The images go in as
    few batches of at most `batch_size` as possible, of equal size (`even_batch`: 300 images at
    250 run as 2 x 150, not 250 + 50 padded to 250). Returns dict(bpd, bpd_stderr (None for one
    image), prior_bpd, decoder_bpd, num_examples). `progress` is called with the number of images
    done after each batch.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise InputError(
            f"images must be uint8 [N, H, W, C] with N >= 1, got {images.dtype} {images.shape}."
        )
    batch = even_batch(images.shape[0], check_int(batch_size, "batch_size"))
    loop = _bound_loop(model, use_ema, jit_compile)
    seed = rng.as_seed(seed)
    totals, priors, decoders = [], [], []
    for start in range(0, len(images), batch):
        x = scale_to_unit(images[start : start + batch])
        keep = int(x.shape[0])
        if keep < batch:  # pad the last batch so one compiled loop serves all
            x = tf.concat([x, tf.zeros([batch - keep, *x.shape[1:]])], 0)
        out = loop(x, seed)
        totals.append(out["total_bpd"].numpy()[:keep])
        priors.append(out["prior_bpd"].numpy()[:keep])
        decoders.append(out["vb"].numpy()[:keep, 0])
        if progress is not None:
            progress(start + keep)
    total = np.concatenate(totals)
    return {
        "bpd": float(total.mean()),
        "bpd_stderr": float(total.std(ddof=1) / np.sqrt(len(total))) if len(total) > 1 else None,
        "prior_bpd": float(np.concatenate(priors).mean()),
        "decoder_bpd": float(np.concatenate(decoders).mean()),
        "num_examples": len(total),
    }
