"""Gaussian diffusion: the forward process, its posterior, the reverse model and the variational bound.

`GaussianDiffusion` is pure tensor math. It knows nothing about Keras: the network is any callable
`denoise_fn(x_t, t) -> model_output`. Conventions follow Ho et al. and improved/guided diffusion so
that results compare with the literature (see docs/mathematics.md, "Conventions"):

- images are float [B, H, W, C] in [-1, 1]; `t` is int32 [B] with values in [0, T);
- coefficient tables are float64 NumPy arrays, gathered per batch and cast to the compute dtype;
- VLB terms and losses are means over dimensions; VLB terms are in bits (nats / ln 2);
- a respaced diffusion (`respace`) runs on fewer steps but calls the network with original indices.

Every loop over timesteps (sampling, bits/dim) is a `tf.while_loop` inside one `tf.function`, with
an XLA option and a stateless Philox seed so graph and XLA runs draw the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np
import tensorflow as tf

from ddpm_tf import losses, rng
from ddpm_tf.checks import check_choice
from ddpm_tf.errors import InputError
from ddpm_tf.schedules import respaced_betas, validate_betas
from ddpm_tf.spacing import AllSteps, Steps, parse_steps

ModelMeanType = Literal["epsilon", "x_start", "v"]
ModelVarType = Literal["fixed_small", "fixed_large", "learned", "learned_range"]
LossType = Literal["mse", "rescaled_mse", "kl", "rescaled_kl"]
MODEL_MEAN_TYPES: tuple[str, ...] = get_args(ModelMeanType)
MODEL_VAR_TYPES: tuple[str, ...] = get_args(ModelVarType)
LOSS_TYPES: tuple[str, ...] = get_args(LossType)

DenoiseFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

_LN2 = math.log(2.0)


def bound_xstart(pred_xstart: tf.Tensor, clip: bool, dynamic_threshold: float = 0.0) -> tf.Tensor:
    """x_0 predictions bounded as asked: with `dynamic_threshold` a quantile p in (0, 1), dynamic
    thresholding (Saharia et al. 2022: per image, s is the p-quantile of |x_0|, at least 1, and x_0
    is clipped to [-s, s] and divided by s); else clipped to [-1, 1] if `clip`; else as they are."""
    if not dynamic_threshold:
        return tf.clip_by_value(pred_xstart, -1.0, 1.0) if clip else pred_xstart
    flat = tf.sort(tf.reshape(tf.abs(pred_xstart), [tf.shape(pred_xstart)[0], -1]), axis=-1)
    quantile = tf.cast(dynamic_threshold, tf.float32)
    index = tf.cast(tf.math.floor(quantile * tf.cast(tf.shape(flat)[1] - 1, tf.float32)), tf.int32)
    s = tf.maximum(flat[:, index], 1.0)[:, None, None, None]
    return tf.clip_by_value(pred_xstart, -s, s) / s


def _is_concrete(x: tf.Tensor) -> bool:
    return tf.executing_eagerly() and hasattr(x, "numpy")


class GaussianDiffusion:
    """DDPM mathematics for a fixed beta schedule (float64 [T]); see the module docstring."""

    def __init__(
        self,
        betas: Sequence[float] | np.ndarray,
        model_mean_type: ModelMeanType = "epsilon",
        model_var_type: ModelVarType = "fixed_large",
        loss_type: LossType = "mse",
        *,
        timestep_map: Sequence[int] | np.ndarray | None = None,
        dtype: str | tf.DType = "float32",
        min_snr_gamma: float = 0.0,
    ):
        self.betas = validate_betas(betas)
        self.model_mean_type = check_choice(model_mean_type, MODEL_MEAN_TYPES, "model_mean_type")
        self.model_var_type = check_choice(model_var_type, MODEL_VAR_TYPES, "model_var_type")
        self.loss_type = check_choice(loss_type, LOSS_TYPES, "loss_type")
        self.dtype = tf.as_dtype(dtype)
        if not self.dtype.is_floating:
            raise InputError(f"`dtype` must be a float dtype, got {self.dtype.name}.")
        self.num_timesteps = int(self.betas.size)
        self.timestep_map = self._check_timestep_map(timestep_map)
        gamma = float(min_snr_gamma)
        if not (gamma == 0.0 or 0.0 < gamma < math.inf):
            raise InputError(f"`min_snr_gamma` must be 0 (off) or a positive number, got {gamma}.")
        if gamma and self.loss_type in ("kl", "rescaled_kl"):
            raise InputError(
                f"`min_snr_gamma` weights the mse term; loss_type={self.loss_type!r} has none. Use "
                "an mse loss type or min_snr_gamma=0."
            )
        self.min_snr_gamma = gamma
        self._build_tables()

    # ----------------------------------------------------------------------------------- tables
    def _check_timestep_map(self, timestep_map) -> np.ndarray:
        if timestep_map is None:
            return np.arange(self.num_timesteps, dtype=np.int64)
        mapped = np.asarray(timestep_map, dtype=np.int64)
        if mapped.shape != (self.num_timesteps,) or np.any(np.diff(mapped) <= 0) or mapped[0] < 0:
            raise InputError(
                f"`timestep_map` must be {self.num_timesteps} increasing non-negative indices, "
                f"got shape {mapped.shape}."
            )
        return mapped

    def _build_tables(self) -> None:
        betas = self.betas
        alphas = 1.0 - betas
        ab = np.cumprod(alphas)
        ab_prev = np.append(1.0, ab[:-1])
        self.alphas_cumprod = ab
        self.alphas_cumprod_prev = ab_prev
        self.sqrt_alphas_cumprod = np.sqrt(ab)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ab)
        self.log_one_minus_alphas_cumprod = np.log1p(-ab)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ab)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ab - 1.0)
        # q(x_{t-1} | x_t, x_0): variance beta_t (1 - abar_{t-1}) / (1 - abar_t), zero at t = 0.
        self.posterior_variance = betas * (1.0 - ab_prev) / (1.0 - ab)
        # log(0) at t = 0 is replaced by the value at t = 1 (beta_1 when T = 1).
        first = self.posterior_variance[1] if self.num_timesteps > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(ab_prev) / (1.0 - ab)
        self.posterior_mean_coef2 = (1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab)
        self.log_betas = np.log(betas)
        # fixed_large: sigma_t^2 = beta_t, except t = 0 which takes the posterior variance of t = 1.
        self.large_variance = np.append(first, betas[1:])
        self.mse_weights = self._min_snr_weights()

    def _min_snr_weights(self) -> np.ndarray:
        """Per-step weights [T] of the mse term: min-SNR-gamma (Hang et al. 2023), or ones.

        The weight makes every parameterization's loss min(SNR_t, gamma) ||x_0 - x_0_hat||^2 with
        SNR_t = abar_t / (1 - abar_t): epsilon's mse is SNR_t times that error, v's (SNR_t + 1)
        times, x_0's once; so the weights are min(SNR, gamma) / SNR, / (SNR + 1) and / 1.
        """
        if not self.min_snr_gamma:
            return np.ones(self.num_timesteps)
        snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        clipped = np.minimum(snr, self.min_snr_gamma)
        per_error = {"epsilon": snr, "v": snr + 1.0, "x_start": np.ones_like(snr)}
        return clipped / per_error[self.model_mean_type]

    def gather(self, table: np.ndarray, t: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        """table[t] (a float64 table [T], indices t [B]) as [B, 1, 1, ...] in the dtype of `like`,
        ready to broadcast against it: how every coefficient reaches a batch."""
        # Casting the float64 table before gathering gives the same values as casting after (a
        # cast is elementwise), and keeps float64 out of the gather: TFLite has no float64 gather.
        values = tf.gather(tf.cast(tf.constant(table, tf.float64), like.dtype), t)
        ones = tf.ones([tf.rank(like) - 1], tf.int32)
        return tf.reshape(values, tf.concat([tf.shape(t), ones], axis=0))

    def combine(self, t, table_a, a, table_b, b) -> tf.Tensor:
        """table_a[t] * a + table_b[t] * b: every closed form here has this shape."""
        return self.gather(table_a, t, a) * a + self.gather(table_b, t, b) * b

    # ------------------------------------------------------------------------------- validation
    def _images(self, x, name: str) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            raise InputError(
                f"`{name}` must be a float tensor scaled to [-1, 1], got dtype {x.dtype.name}; "
                "convert uint8 images with ddpm_tf.pixels.scale_to_unit."
            )
        if x.shape.rank is not None and x.shape.rank != 4:
            raise InputError(
                f"`{name}` must have shape [B, H, W, C] (rank 4), got shape {x.shape}."
            )
        return tf.cast(x, self.dtype)

    def _timesteps(self, t, x: tf.Tensor, name: str = "t") -> tf.Tensor:
        t = tf.convert_to_tensor(t)
        if not t.dtype.is_integer:
            raise InputError(
                f"`{name}` must be an integer tensor of timestep indices, got {t.dtype.name}."
            )
        if t.shape.rank is not None and t.shape.rank != 1:
            raise InputError(f"`{name}` must have shape [B], got shape {t.shape}.")
        batch = x.shape[0]
        if batch is not None and t.shape[0] is not None and t.shape[0] != batch:
            raise InputError(
                f"`{name}` has {t.shape[0]} entries but the images have batch {batch}."
            )
        t = tf.cast(t, tf.int32)
        message = f"`{name}` must lie in [0, {self.num_timesteps})"
        if _is_concrete(t):
            values = t.numpy()
            if values.size and (values.min() < 0 or values.max() >= self.num_timesteps):
                raise InputError(f"{message}; got values from {values.min()} to {values.max()}.")
            return t
        checks = [
            tf.debugging.assert_non_negative(t, message=message),
            tf.debugging.assert_less(t, self.num_timesteps, message=message),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(t)

    def _check_output(self, model_output, x_t: tf.Tensor) -> tf.Tensor:
        model_output = tf.cast(tf.convert_to_tensor(model_output), self.dtype)
        channels = x_t.shape[-1]
        expected = 2 * channels if self.learns_variance else channels
        got = model_output.shape[-1]
        if channels is not None and got is not None and got != expected:
            detail = "2C (mean and variance)" if self.learns_variance else "C"
            raise InputError(
                f"`model_output` has {got} channels but model_var_type={self.model_var_type!r} "
                f"with C={channels} image channels needs {detail} = {expected}."
            )
        return model_output

    @property
    def learns_variance(self) -> bool:
        return self.model_var_type in ("learned", "learned_range")

    def model_timesteps(self, t: tf.Tensor) -> tf.Tensor:
        """The original-schedule indices the network sees for indices `t` of this process."""
        return tf.gather(tf.constant(self.timestep_map, tf.int32), t)

    def model_output(self, denoise_fn: DenoiseFn, x_t: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        """The network's output at x_t and process indices t (called with the original ones),
        its channels checked against the variance type."""
        return self._check_output(denoise_fn(x_t, self.model_timesteps(t)), x_t)

    # -------------------------------------------------------------------------- forward process
    def q_mean_variance(self, x_start, t) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I): (mean, variance, log_variance)."""
        x_start = self._images(x_start, "x_start")
        t = self._timesteps(t, x_start)
        mean = self.gather(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = self.gather(1.0 - self.alphas_cumprod, t, x_start)
        log_variance = self.gather(self.log_one_minus_alphas_cumprod, t, x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start, t, noise=None, seed: rng.SeedLike | None = None) -> tf.Tensor:
        """Draws x_t ~ q(x_t | x_0) as sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        x_start = self._images(x_start, "x_start")
        t = self._timesteps(t, x_start)
        return self._q_sample(x_start, t, self._noise_like(x_start, noise, seed))

    def _q_sample(self, x_start, t, noise) -> tf.Tensor:
        return self.combine(
            t, self.sqrt_alphas_cumprod, x_start, self.sqrt_one_minus_alphas_cumprod, noise
        )

    def _noise_like(self, x: tf.Tensor, noise, seed) -> tf.Tensor:
        if noise is not None:
            noise = tf.cast(noise, self.dtype)
            if (
                noise.shape.is_fully_defined()
                and x.shape.is_fully_defined()
                and noise.shape != x.shape
            ):
                raise InputError(
                    f"`noise` has shape {noise.shape} but the images have shape {x.shape}."
                )
            return noise
        if seed is None:
            return tf.random.normal(tf.shape(x), dtype=self.dtype)
        return rng.normal(tf.shape(x), seed, self.dtype)

    def q_posterior_mean_variance(self, x_start, x_t, t) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """q(x_{t-1} | x_t, x_0): (mean, variance, log_variance_clipped)."""
        x_start = self._images(x_start, "x_start")
        x_t = self._images(x_t, "x_t")
        t = self._timesteps(t, x_t)
        return self._posterior(x_start, x_t, t)

    def _posterior(self, x_start, x_t, t):
        mean = self.combine(t, self.posterior_mean_coef1, x_start, self.posterior_mean_coef2, x_t)
        variance = self.gather(self.posterior_variance, t, x_t)
        log_variance = self.gather(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # --------------------------------------------------------------- parameterization conversions
    def predict_xstart_from_eps(self, x_t, t, eps) -> tf.Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return self.combine(
            t, self.sqrt_recip_alphas_cumprod, x_t, self.sqrt_recipm1_alphas_cumprod, -eps
        )

    def predict_eps_from_xstart(self, x_t, t, pred_xstart) -> tf.Tensor:
        """eps = (x_t / sqrt(abar_t) - x_0) / sqrt(1 / abar_t - 1)."""
        return (
            self.gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart
        ) / self.gather(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def predict_xstart_from_v(self, x_t, t, v) -> tf.Tensor:
        """x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v, for v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0."""
        return self.combine(
            t, self.sqrt_alphas_cumprod, x_t, self.sqrt_one_minus_alphas_cumprod, -v
        )

    def v_target(self, x_start, t, noise) -> tf.Tensor:
        """The v of Salimans & Ho for this x_0 and noise: sqrt(abar_t) eps - sqrt(1 - abar_t) x_0."""
        return self.combine(
            t, self.sqrt_alphas_cumprod, noise, self.sqrt_one_minus_alphas_cumprod, -x_start
        )

    def score_from_eps(self, eps, t) -> tf.Tensor:
        """The score grad log q(x_t) that eps implies: -eps / sqrt(1 - abar_t)."""
        return -eps / self.gather(self.sqrt_one_minus_alphas_cumprod, t, eps)

    def eps_from_score(self, score, t) -> tf.Tensor:
        """Inverse of `score_from_eps`: eps = -sqrt(1 - abar_t) score."""
        return -score * self.gather(self.sqrt_one_minus_alphas_cumprod, t, score)

    def _predict_xstart(self, mean_output, x_t, t) -> tf.Tensor:
        if self.model_mean_type == "epsilon":
            return self.predict_xstart_from_eps(x_t, t, mean_output)
        if self.model_mean_type == "v":
            return self.predict_xstart_from_v(x_t, t, mean_output)
        return mean_output

    # ---------------------------------------------------------------------------- reverse model
    def _model_log_variance(self, variance_output, x_t, t) -> tf.Tensor:
        if self.model_var_type == "learned":
            return variance_output
        if self.model_var_type == "learned_range":
            low = self.gather(self.posterior_log_variance_clipped, t, x_t)
            high = self.gather(self.log_betas, t, x_t)
            frac = (variance_output + 1.0) / 2.0
            return frac * high + (1.0 - frac) * low
        if self.model_var_type == "fixed_large":
            return self.gather(np.log(self.large_variance), t, x_t)
        return self.gather(self.posterior_log_variance_clipped, t, x_t)

    def p_mean_variance(
        self, model_output, x_t, t, clip_denoised: bool = True, dynamic_threshold: float = 0.0
    ) -> dict:
        """p(x_{t-1} | x_t) from the network's output: dict(mean, variance, log_variance, pred_xstart).

        `model_output` has C channels, or 2C when the variance is learned (mean part first); the
        x_0 prediction is bounded as `bound_xstart` says.
        """
        x_t = self._images(x_t, "x_t")
        t = self._timesteps(t, x_t)
        model_output = self._check_output(model_output, x_t)
        return self._p_mean_variance(model_output, x_t, t, clip_denoised, dynamic_threshold)

    def _p_mean_variance(self, model_output, x_t, t, clip_denoised, dynamic_threshold=0.0) -> dict:
        """`p_mean_variance` without the checks, for compiled loops (the sampling loop's predictor)."""
        if self.learns_variance:
            mean_output, variance_output = tf.split(model_output, 2, axis=-1)
        else:
            mean_output, variance_output = model_output, None
        log_variance = self._model_log_variance(variance_output, x_t, t)
        log_variance = log_variance + tf.zeros_like(x_t)
        pred_xstart = self._predict_xstart(mean_output, x_t, t)
        pred_xstart = bound_xstart(pred_xstart, clip_denoised, dynamic_threshold)
        mean, _, _ = self._posterior(pred_xstart, x_t, t)
        return {
            "mean": mean,
            "variance": tf.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
        }

    # ------------------------------------------------------------------------- variational bound
    def _vb_terms(
        self, model_output, x_start, x_t, t, clip_denoised, all_at_zero=None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(vb [B] in bits, pred_xstart): the KL term for t > 0, the decoder NLL for t = 0.

        `all_at_zero`, a scalar bool, says the whole batch shares one t (as in the bpd loop); then
        only the term that applies is computed, which saves the costly log-CDFs on T - 1 steps.
        """
        out = self._p_mean_variance(model_output, x_t, t, clip_denoised)

        def kl():
            true_mean, _, true_log_variance = self._posterior(x_start, x_t, t)
            value = losses.normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
            return losses.mean_over_dims(value) / _LN2

        def decoder_nll():
            log_likelihood = losses.discretized_gaussian_log_likelihood(
                x_start, out["mean"], 0.5 * out["log_variance"]
            )
            return -losses.mean_over_dims(log_likelihood) / _LN2

        if all_at_zero is None:
            return tf.where(tf.equal(t, 0), decoder_nll(), kl()), out["pred_xstart"]
        return tf.cond(all_at_zero, decoder_nll, kl), out["pred_xstart"]

    def vb_terms_bpd(self, model_output, x_start, x_t, t, clip_denoised: bool = True) -> tf.Tensor:
        """One term of the VLB in bits/dim [B]: L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)), L_0 at t=0."""
        x_start = self._images(x_start, "x_start")
        x_t = self._images(x_t, "x_t")
        t = self._timesteps(t, x_t)
        model_output = self._check_output(model_output, x_t)
        return self._vb_terms(model_output, x_start, x_t, t, clip_denoised)[0]

    def prior_bpd(self, x_start) -> tf.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim [B]; no parameters, a check of the schedule."""
        x_start = self._images(x_start, "x_start")
        t_last = tf.fill(tf.shape(x_start)[:1], self.num_timesteps - 1)
        mean, _, log_variance = self.q_mean_variance(x_start, t_last)
        kl = losses.normal_kl(mean, log_variance, tf.zeros_like(mean), tf.zeros_like(mean))
        return losses.mean_over_dims(kl) / _LN2

    def training_losses(
        self, denoise_fn: DenoiseFn, x_start, t, noise=None, seed: rng.SeedLike | None = None
    ) -> dict:
        """Per-example losses [B] for `loss_type`: dict(loss) plus `mse` and `vb` where they apply.

        With a learned variance, the vb term sees the mean output through a stop-gradient so it
        trains only the variance (Improved DDPM); "rescaled_mse" weights it by T/1000 (lambda = 0.001
        of the full bound) and "rescaled_kl" multiplies the bound term by T.
        """
        x_start = self._images(x_start, "x_start")
        t = self._timesteps(t, x_start)
        noise = self._noise_like(x_start, noise, seed)
        x_t = self._q_sample(x_start, t, noise)
        model_output = self.model_output(denoise_fn, x_t, t)
        return self._losses_from_output(model_output, x_start, x_t, t, noise)

    def losses_from_output(self, model_output, x_start, x_t, t, noise) -> dict:
        """The terms of `training_losses` for a network output already computed at x_t = q_sample(...)."""
        x_start = self._images(x_start, "x_start")
        x_t = self._images(x_t, "x_t")
        t = self._timesteps(t, x_t)
        model_output = self._check_output(model_output, x_t)
        return self._losses_from_output(model_output, x_start, x_t, t, tf.cast(noise, self.dtype))

    def _losses_from_output(self, model_output, x_start, x_t, t, noise) -> dict:
        if self.loss_type in ("kl", "rescaled_kl"):
            vb = self._vb_terms(model_output, x_start, x_t, t, clip_denoised=False)[0]
            scale = self.num_timesteps if self.loss_type == "rescaled_kl" else 1.0
            return {"loss": vb * scale, "vb": vb}
        terms = {}
        mean_output = model_output
        if self.learns_variance:
            mean_output, variance_output = tf.split(model_output, 2, axis=-1)
            frozen = tf.concat([tf.stop_gradient(mean_output), variance_output], axis=-1)
            vb = self._vb_terms(frozen, x_start, x_t, t, clip_denoised=False)[0]
            if self.loss_type == "rescaled_mse":
                vb = vb * (self.num_timesteps / 1000.0)
            terms["vb"] = vb
        target = {"epsilon": noise, "x_start": x_start}.get(self.model_mean_type)
        if target is None:
            target = self.v_target(x_start, t, noise)
        terms["mse"] = losses.mean_over_dims(tf.square(target - mean_output))
        mse = terms["mse"]
        if self.min_snr_gamma:
            mse = mse * tf.reshape(self.gather(self.mse_weights, t, mse), [-1])
        terms["loss"] = mse + terms.get("vb", 0.0)
        return terms

    # ------------------------------------------------------------------------------------ sampling
    # The sampling loop lives in `ddpm_tf.sampling` (it imports this module, so these thin wrappers
    # import it when called): one module per method, one loop, one `SamplingSpec`.
    def with_steps(self, steps: Steps | str | int | Sequence[int] | None) -> GaussianDiffusion:
        """The process that samples on the kept steps of a steps value (`ddpm_tf.spacing`; a text
        or a count is parsed by `parse_steps`, a bare count spaced uniformly): this process itself
        for all steps, else `respace` of the kept indices."""
        steps = parse_steps(steps)
        if isinstance(steps, AllSteps):
            return self
        return self.respace(steps.indices(self.num_timesteps, self.alphas_cumprod))

    def _step(self, method: str, denoise_fn, x_t, t, noise, **settings) -> dict:
        from ddpm_tf.sampling.loop import predictor
        from ddpm_tf.sampling.registry import method_class
        from ddpm_tf.sampling.spec import SamplingSpec

        x_t = self._images(x_t, "x_t")
        t = self._timesteps(t, x_t)
        spec = SamplingSpec(method, **settings)
        rule = method_class(method)(self, spec)
        noise = noise if rule.needs_noise else None  # as the loop: a deterministic step takes none
        memory = tuple(tf.zeros_like(x_t) for _ in range(rule.memory))  # a first step: no history
        sample, pred_xstart, _ = rule.step(predictor(self, denoise_fn, spec), x_t, t, noise, memory)
        return {"sample": sample, "pred_xstart": pred_xstart}

    def p_sample(self, denoise_fn: DenoiseFn, x_t, t, noise, clip_denoised: bool = True) -> dict:
        """One ancestral step x_t -> x_{t-1} = mean + sigma_t noise (no noise at t = 0)."""
        return self._step("ancestral", denoise_fn, x_t, t, noise, clip_denoised=clip_denoised)

    def ddim_sample(
        self, denoise_fn: DenoiseFn, x_t, t, noise, eta: float = 0.0, clip_denoised: bool = True
    ) -> dict:
        """One DDIM step (Song et al.) with stochasticity eta (0: deterministic, 1: DDPM-like)."""
        return self._step("ddim", denoise_fn, x_t, t, noise, eta=eta, clip_denoised=clip_denoised)

    def _run(self, method: str, denoise_fn, shape, seed, every, noise, **settings) -> dict:
        from ddpm_tf.sampling.loop import run_loop
        from ddpm_tf.sampling.spec import SamplingSpec

        spec = SamplingSpec(method, **settings)
        return run_loop(self, denoise_fn, shape, seed, spec, noise=noise, every=every)

    def p_sample_loop_progressive(
        self,
        denoise_fn: DenoiseFn,
        shape: Sequence[int],
        seed: rng.SeedLike,
        clip_denoised: bool = True,
        every: int = 1,
        noise=None,
        jit_compile: bool = False,
    ) -> dict:
        """Ancestral sampling that also returns the x_0 predictions at every `every`-th step.

        Returns dict(sample [B,H,W,C], pred_xstart [K,B,H,W,C]) in sampling order (last is t=0).
        """
        settings = {"clip_denoised": clip_denoised, "jit_compile": jit_compile}
        return self._run("ancestral", denoise_fn, shape, seed, every, noise, **settings)

    def p_sample_loop(
        self,
        denoise_fn: DenoiseFn,
        shape: Sequence[int],
        seed: rng.SeedLike,
        clip_denoised: bool = True,
        noise=None,
        jit_compile: bool = False,
    ) -> tf.Tensor:
        """Ancestral sampling x_T ~ N(0, I) -> x_0 in one compiled loop; x_T is `noise` if given."""
        return self.p_sample_loop_progressive(
            denoise_fn, shape, seed, clip_denoised, 0, noise, jit_compile
        )["sample"]

    def ddim_sample_loop_progressive(
        self,
        denoise_fn: DenoiseFn,
        shape: Sequence[int],
        seed: rng.SeedLike,
        eta: float = 0.0,
        clip_denoised: bool = True,
        every: int = 1,
        noise=None,
        jit_compile: bool = False,
    ) -> dict:
        """DDIM sampling that also returns the x_0 predictions (see `p_sample_loop_progressive`)."""
        settings = {"eta": eta, "clip_denoised": clip_denoised, "jit_compile": jit_compile}
        return self._run("ddim", denoise_fn, shape, seed, every, noise, **settings)

    def ddim_sample_loop(
        self,
        denoise_fn: DenoiseFn,
        shape: Sequence[int],
        seed: rng.SeedLike,
        eta: float = 0.0,
        clip_denoised: bool = True,
        noise=None,
        jit_compile: bool = False,
    ) -> tf.Tensor:
        """DDIM sampling over this process's steps (respace first for fewer steps)."""
        return self.ddim_sample_loop_progressive(
            denoise_fn, shape, seed, eta, clip_denoised, 0, noise, jit_compile
        )["sample"]

    # ------------------------------------------------------------------------------------ bits/dim
    def calc_bpd_loop(
        self,
        denoise_fn: DenoiseFn,
        x_start,
        clip_denoised: bool = True,
        seed: rng.SeedLike = 0,
        jit_compile: bool = False,
    ) -> dict:
        """The full variational bound per example, in bits/dim, with one network call per step.

        Returns dict(total_bpd [B], prior_bpd [B], vb [B,T], mse [B,T], xstart_mse [B,T]): vb[:, t]
        is L_t's term (L_0 the decoder), mse the squared error of the implied eps, xstart_mse of x_0.
        """
        x_start = self._images(x_start, "x_start")
        if _is_concrete(x_start):
            low, high = float(tf.reduce_min(x_start)), float(tf.reduce_max(x_start))
            if low < -1.0 - 1e-6 or high > 1.0 + 1e-6:
                raise InputError(
                    f"`x_start` must be images scaled to [-1, 1] for bits/dim, got values in [{low}, {high}]."
                )
        clip = bool(clip_denoised)
        compiled = tf.function(
            lambda x, s: self.bpd_loop_graph(denoise_fn, x, s, clip),
            jit_compile=bool(jit_compile),
            autograph=False,
        )
        return compiled(x_start, rng.as_seed(seed))

    def bpd_loop_graph(
        self, denoise_fn: DenoiseFn, x_start, seed, clip_denoised: bool = True
    ) -> dict:
        """The loop of `calc_bpd_loop` as graph-building code, inside a caller's own `tf.function`
        (compiled once, it serves every batch of a dataset: see `ddpm_tf.likelihood`)."""
        batch = tf.shape(x_start)[:1]
        arrays = [tf.TensorArray(self.dtype, size=self.num_timesteps) for _ in range(3)]

        def body(i, vb_ta, mse_ta, xmse_ta):
            t_scalar = self.num_timesteps - 1 - i
            t = tf.fill(batch, t_scalar)
            noise = rng.normal(tf.shape(x_start), rng.fold_in(seed, t_scalar), self.dtype)
            x_t = self._q_sample(x_start, t, noise)
            model_output = self.model_output(denoise_fn, x_t, t)
            vb, pred_xstart = self._vb_terms(
                model_output, x_start, x_t, t, clip_denoised, tf.equal(t_scalar, 0)
            )
            eps = self.predict_eps_from_xstart(x_t, t, pred_xstart)
            return (
                i + 1,
                vb_ta.write(t_scalar, vb),
                mse_ta.write(t_scalar, losses.mean_over_dims(tf.square(eps - noise))),
                xmse_ta.write(t_scalar, losses.mean_over_dims(tf.square(pred_xstart - x_start))),
            )

        # The steps do not depend on each other, so tf.while_loop would run several at once; one
        # at a time keeps memory at one step's and avoids running one oneDNN convolution kernel
        # from several threads at once, which crashes TensorFlow 2.21's CPU build now and then.
        _, *arrays = tf.while_loop(
            lambda i, *_: i < self.num_timesteps,
            body,
            (tf.constant(0), *arrays),
            maximum_iterations=self.num_timesteps,
            parallel_iterations=1,
        )
        vb, mse, xstart_mse = (tf.transpose(a.stack()) for a in arrays)
        prior = self.prior_bpd(x_start)
        return {
            "total_bpd": tf.reduce_sum(vb, axis=1) + prior,
            "prior_bpd": prior,
            "vb": vb,
            "mse": mse,
            "xstart_mse": xstart_mse,
        }

    # ------------------------------------------------------------------------------------ respacing
    def respace(self, use_timesteps: Sequence[int]) -> GaussianDiffusion:
        """The process that visits only `use_timesteps` (indices of this one), e.g. from space_timesteps.

        Its betas keep the kept steps' alpha_bar; its network calls use the original indices.
        """
        betas, keep = respaced_betas(self.betas, use_timesteps)
        return GaussianDiffusion(
            betas,
            self.model_mean_type,
            self.model_var_type,
            self.loss_type,
            timestep_map=self.timestep_map[keep],
            dtype=self.dtype,
            min_snr_gamma=self.min_snr_gamma,
        )

    def get_config(self) -> dict:
        """A JSON-serializable description from which `from_config` rebuilds this process exactly."""
        return {
            "betas": self.betas.tolist(),
            "model_mean_type": self.model_mean_type,
            "model_var_type": self.model_var_type,
            "loss_type": self.loss_type,
            "timestep_map": self.timestep_map.tolist(),
            "dtype": self.dtype.name,
            "min_snr_gamma": self.min_snr_gamma,
        }

    @classmethod
    def from_config(cls, config: dict) -> GaussianDiffusion:
        return cls(**config)

    def __repr__(self) -> str:
        return (
            f"GaussianDiffusion(T={self.num_timesteps}, model_mean_type={self.model_mean_type!r}, "
            f"model_var_type={self.model_var_type!r}, loss_type={self.loss_type!r})"
        )
