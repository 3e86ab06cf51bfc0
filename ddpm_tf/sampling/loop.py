"""The one sampling loop: every method, every program and every export samples through it.

`build_loop` writes the loop into the caller's `tf.function` (the compiled `Sampler`s and the
exported graphs are built this way, with a batch size, labels or a guidance scale that are tensors
of that function); `run_loop` compiles it for one call and runs it (`GaussianDiffusion`'s
`p_sample_loop`/`ddim_sample_loop` are this). Both take a `SamplingSpec` and run its method
(`ddpm_tf.sampling.registry`) over the diffusion respaced to its steps, from x_T down to x_0, in one
`tf.while_loop`.

Noise: x_T and each step's noise come from the seed by the spec's noise source, the step noise of
process index t keyed by t, so graph and XLA runs, and runs started at another step, draw the same
numbers for the same step.

`Hooks` are where editing and guidance plug in without forking the loop: a transform of x_t before
each step, known pixels kept (inpainting: drawn from q(x_t | x_0) before each step), a transform of
the network's output (e.g. shifting eps by a classifier's gradient), a start at any step of the
process from a given x_t, and a path that goes back up the process (RePaint's resampling jumps).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

import tensorflow as tf

from ddpm_tf import rng
from ddpm_tf.checks import check_int
from ddpm_tf.diffusion import bound_xstart
from ddpm_tf.errors import InputError
from ddpm_tf.sampling.method import Predict, SamplingMethod
from ddpm_tf.sampling.registry import method_class
from ddpm_tf.sampling.spec import SamplingSpec

if TYPE_CHECKING:
    from ddpm_tf.diffusion import DenoiseFn, GaussianDiffusion

__all__ = ["Hooks", "build_loop", "noise_sources", "predictor", "run_loop"]


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What the loop lets callers change, each None for "as it is".

    Attributes:
        transform_x: (x_t, t) -> x_t, applied before each step; t is int32 [B] of process indices.
        transform_output: (model_output, x_t, t) -> model_output, applied to the network's output
            (C or 2C channels) before the method reads it.
        start: the process index the loop starts at (default T'-1, the top); x at that index is the
            loop's `noise` argument, which is then required.
        known: (images, mask): before each step at index t the pixels where `mask` (0/1,
            broadcastable to x) is 1 are replaced by a fresh draw of q(x_t | x_0 = images); the
            replacement is applied before `transform_x`.
        guide: (process, prediction, x_t, t) -> prediction, applied to the model's p(x_{t-1} | x_t)
            (dict of mean, log_variance, pred_xstart) after the x_0 bounds: guidance by a
            classifier's gradient (`ddpm_tf.guidance.ClassifierGuidance`).
        path: the process indices visited, from the start down to -1 (the data), each one away
            from the one before: a move down is a step of the method, a move up renoises x_t to
            x_{t+1} with q(x_{t+1} | x_t) (RePaint's jumps; one-step methods only). None: straight
            down. With a path, step noise is keyed by the move, not by t.
    """

    transform_x: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None
    transform_output: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor] | None = None
    start: int | None = None
    known: tuple | None = None
    guide: Callable[[GaussianDiffusion, dict, tf.Tensor, tf.Tensor], dict] | None = None
    path: tuple[int, ...] | None = None


NO_HOOKS = Hooks()


def noise_sources(seed, noise_source: str, dtype: tf.DType) -> tuple[Callable, Callable]:
    """(x_T noise of a shape, step noise of a shape at step t) for a noise source.

    "philox": TF's stateless Philox with seeds split and folded in by step. "portable": the
    builtin-op generator of `rng.portable_normal`, stream 0 for x_T and t + 1 for step t.
    """
    if noise_source == "portable":
        return (
            lambda shape: rng.portable_normal(shape, seed, 0, dtype),
            lambda shape, t: rng.portable_normal(shape, seed, t + 1, dtype),
        )
    init_seed, step_seed = rng.split(seed)
    return (
        lambda shape: rng.normal(shape, init_seed, dtype),
        lambda shape, t: rng.normal(shape, rng.fold_in(step_seed, t), dtype),
    )


def predictor(
    process: GaussianDiffusion, denoise_fn: DenoiseFn, spec: SamplingSpec, hooks: Hooks = NO_HOOKS
) -> Predict:
    """predict(x_t, t): the network's p(x_{t-1} | x_t) at process indices t, with the hooks'
    output transform, the spec's x_0 bounds (clipping or dynamic thresholding), then the hooks'
    guide applied and the x_0 prediction bounded again (as DPM-Solver bounds the guided data
    prediction: unbounded, the shift of the first steps, where abar_t is near 0, sends x_0 far
    out of the data's range)."""

    def predict(x_t, t):
        output = process.model_output(denoise_fn, x_t, t)
        if hooks.transform_output is not None:
            output = hooks.transform_output(output, x_t, t)
        prediction = process._p_mean_variance(
            output, x_t, t, spec.clip_denoised, spec.dynamic_threshold
        )
        if hooks.guide is not None:  # guided, then bounded again: a shift cannot leave them
            prediction = hooks.guide(process, prediction, x_t, t)
            bounded = bound_xstart(
                prediction["pred_xstart"], spec.clip_denoised, spec.dynamic_threshold
            )
            prediction = {**prediction, "pred_xstart": bounded}
        return prediction

    return predict


def build_loop(
    diffusion: GaussianDiffusion,
    denoise_fn: DenoiseFn,
    shape,
    seed,
    spec: SamplingSpec,
    *,
    noise=None,
    every: int = 0,
    hooks: Hooks = NO_HOOKS,
) -> dict:
    """The sampling loop of `spec` as graph-building code, inside a caller's own `tf.function`.

    `shape` [B, H, W, C] may hold tensors (a batch size chosen at run time) and `denoise_fn` may
    close over tensors of that function (labels, a guidance scale). `noise` is x at the start
    (x_T unless `hooks.start` says otherwise; None: drawn from the seed). Every `every`-th step's
    x_0 prediction is recorded (0: none). Returns dict(sample[, pred_xstart [K, B, H, W, C]]).
    The spec's `use_ema` and `jit_compile` are for the caller (which network, how to compile).
    """
    process = diffusion.with_steps(spec.steps)
    first = process.num_timesteps - 1 if hooks.start is None else hooks.start
    method = method_class(spec.method)(process, spec, start=first)
    predict = predictor(process, denoise_fn, spec, hooks)
    initial_noise, step_noise = noise_sources(seed, spec.noise_source, process.dtype)
    x = initial_noise(shape) if noise is None else tf.cast(noise, process.dtype)
    prepare = _preparation(process, hooks, step_noise)
    if hooks.path is None:
        return _while_loop(method, predict, x, first, step_noise, every, prepare)
    if every:
        raise InputError("`every` records the x_0 predictions of a straight path only.")
    path = _check_path(hooks.path, first, method)
    return _path_loop(method, predict, x, path, step_noise, prepare)


KNOWN_NOISE_KEY = 1 << 20
"""Offset of the keys of the known pixels' noise, apart from the steps' (keys below it)."""


def _preparation(process: GaussianDiffusion, hooks: Hooks, step_noise) -> Callable:
    """prepare(x_t, t [B], key): x_t with the known pixels drawn from q(x_t | x_0) (noise of
    `key`), then `hooks.transform_x`; the identity without those hooks."""

    def prepare(x, t, key):
        if hooks.known is not None:
            images, mask = (tf.cast(v, x.dtype) for v in hooks.known)
            z = step_noise(tf.shape(x), KNOWN_NOISE_KEY + key)
            x = mask * process._q_sample(images, t, z) + (1.0 - mask) * x
        if hooks.transform_x is not None:
            x = tf.ensure_shape(hooks.transform_x(x, t), x.shape)
        return x

    return prepare


def _check_path(path, first: int, method: SamplingMethod) -> list[int]:
    path = [int(t) for t in path]
    steps = [b - a for a, b in zip(path, path[1:], strict=False)]
    if not path or path[0] != first or path[-1] != -1 or any(abs(d) != 1 for d in steps):
        raise InputError(
            f"hooks.path must go from the start {first} to -1 (the data) in moves of one step, "
            f"got {path[:8]}{'...' if len(path) > 8 else ''}."
        )
    if max(path) > first:
        raise InputError(f"hooks.path goes above its start {first}.")
    if any(d > 0 for d in steps) and method.memory:
        raise InputError(
            f"hooks.path goes back up, which a multistep method ({method.name}) cannot follow: "
            "use a one-step method (ancestral or ddim)."
        )
    return path


def _path_segments(path: list[int]) -> tuple[list[int], list[int], list[int]]:
    """The path as segments of one move down followed by moves up: for each move down, its
    index t, its key (its place in the path) and how many moves up follow it."""
    downs, keys, ups = [], [], []
    for i, (a, b) in enumerate(itertools.pairwise(path)):
        if b < a:
            downs.append(a)
            keys.append(i)
            ups.append(0)
        else:
            ups[-1] += 1
    return downs, keys, ups


def _path_loop(method: SamplingMethod, predict: Predict, x, path, step_noise, prepare) -> dict:
    """Follows `path` in a tf.while_loop: a method step for each move down, then the draws of
    q(x_{t+1} | x_t) for the moves up after it, in an inner loop without the network (so the
    network sits in no conditional branch, which converters such as tf2onnx cannot take); the
    noise of move i of the path has key i."""
    process = method.process
    segments = _path_segments(path)
    downs, keys, ups = (tf.constant(v, tf.int32) for v in segments)
    batch = tf.shape(x)[:1]

    def renoise(j, x, t, key):  # the move up from index t: x_{t+1} ~ q(x_{t+1} | x_t)
        beta = process.gather(process.betas, tf.fill(batch, t + 1), x)
        x = tf.sqrt(1.0 - beta) * x + tf.sqrt(beta) * step_noise(tf.shape(x), key)
        return j + 1, tf.ensure_shape(x, x.shape), t + 1, key + 1

    def body(i, x):
        t_scalar, key = downs[i], keys[i]
        t = tf.fill(batch, t_scalar)
        noise = step_noise(tf.shape(x), key) if method.needs_noise else None
        x = method.step(predict, prepare(x, t, key), t, noise)[0]
        x = tf.ensure_shape(x, x.shape)
        count = ups[i]
        _, x, _, _ = tf.while_loop(
            lambda j, *_: j < count, renoise, (tf.constant(0), x, t_scalar - 1, key + 1)
        )
        return i + 1, x

    count = len(segments[0])
    _, x = tf.while_loop(
        lambda i, _: i < count, body, (tf.constant(0), x), maximum_iterations=count
    )
    return {"sample": x}


def _while_loop(
    method: SamplingMethod, predict: Predict, x, first: int, step_noise, every, prepare
) -> dict:
    """Runs `method.step` from process index `first` down to 0 in a tf.while_loop.

    The loop carries (i, x), the method's memory (multistep methods), and a TensorArray
    of records only if `every` > 0, so that converters lacking TensorList ops (TFLite builtins,
    ONNX) take the plain loop as it is. Methods that need no noise draw none.
    """
    dtype = method.process.dtype
    batch = tf.shape(x)[:1]
    num_records = len(range(0, first + 1, every)) if every else 0

    def body(i, x, *carried):
        t_scalar = first - i
        t = tf.fill(batch, t_scalar)
        x = prepare(x, t, t_scalar)
        noise = step_noise(tf.shape(x), t_scalar) if method.needs_noise else None
        x_next, pred_xstart, memory = method.step(predict, x, t, noise, carried[: method.memory])
        memory = tuple(tf.ensure_shape(m, x.shape) for m in memory)
        if num_records:
            slot = num_records - 1 - t_scalar // every
            records = carried[-1]
            records = tf.cond(
                tf.equal(t_scalar % every, 0),
                lambda: records.write(slot, pred_xstart),
                lambda: records,
            )
            memory += (records,)
        return (i + 1, tf.ensure_shape(x_next, x.shape), *memory)

    state = (tf.constant(0), x, *(tf.zeros_like(x) for _ in range(method.memory)))
    if num_records:
        state += (tf.TensorArray(dtype, size=num_records, element_shape=x.shape),)
    _, x, *carried = tf.while_loop(
        lambda i, *_: i < first + 1, body, state, maximum_iterations=first + 1
    )
    result = {"sample": x}
    if num_records:
        result["pred_xstart"] = carried[-1].stack()
    return result


def run_loop(
    diffusion: GaussianDiffusion,
    denoise_fn: DenoiseFn,
    shape,
    seed: rng.SeedLike,
    spec: SamplingSpec | None = None,
    *,
    noise=None,
    every: int = 0,
    hooks: Hooks = NO_HOOKS,
) -> dict:
    """One call of the sampling loop of `spec` (default `SamplingSpec()`), compiled for this call.

    Nothing is cached: called again, the loop is traced again (a second or so for a small network).
    Repeated sampling goes through `Sampler`, the one layer that compiles and keeps samplers.
    Returns dict(sample [B, H, W, C][, pred_xstart]) as `build_loop`.
    """
    spec = spec if spec is not None else SamplingSpec()
    shape = _check_shape(shape)
    if noise is not None:
        noise = diffusion._images(noise, "noise")
        if tuple(noise.shape) != shape:
            raise InputError(f"`noise` (x_T) has shape {tuple(noise.shape)}, expected {shape}.")
    every = check_int(every, "every", 0)
    _check_start(hooks, diffusion.with_steps(spec.steps).num_timesteps, noise)

    def run(seed, noise):
        return build_loop(
            diffusion, denoise_fn, shape, seed, spec, noise=noise, every=every, hooks=hooks
        )

    compiled = tf.function(run, jit_compile=spec.jit_compile, autograph=False)
    return compiled(rng.as_seed(seed), noise)


def _check_shape(shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise InputError(f"`shape` must be [B, H, W, C] with positive sizes, got {shape}.")
    return shape


def _check_start(hooks: Hooks, num_steps: int, noise) -> None:
    if hooks.start is None:
        return
    check_int(hooks.start, "hooks.start", 0)
    if hooks.start >= num_steps:
        raise InputError(f"hooks.start={hooks.start} must be a step index in [0, {num_steps}).")
    if noise is None:
        raise InputError(
            f"hooks.start={hooks.start} starts inside the process: pass x at that step as `noise`."
        )
