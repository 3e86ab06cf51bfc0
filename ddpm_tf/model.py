"""`DiffusionModel`: the Keras model that `fit` trains, `evaluate` measures and `generate` samples.

It holds the denoising network, a copy of it whose weights are the exponential moving average (EMA)
of the trained ones, the `GaussianDiffusion` and a timestep sampler. `train_step` draws t and the
noise, forms x_t, takes the configured loss, clips the gradient by its global norm and updates the
EMA; `test_step` reports the same loss and an unbiased estimate of the full bound in bits/dim, both
with the EMA network, as does `generate`.

Distribution: the noise, t and label dropout of a step are drawn for the whole global batch from one
seed and each replica takes its own rows, and the network's dropout masks are a function of (that
seed, the global row, the layer) (`ddpm_tf.dropout`), so N replicas make the same update as one
device on the same global batch, and a resumed run the update of an uninterrupted one. Gradients are all-reduced before clipping so the clip sees the global norm.
Under `mixed_float16` (or `mixed_bfloat16`) the network computes in float16 (bfloat16) with a float32
output head while the diffusion math, the loss and the EMA stay in float32; under float16 the loss
is scaled by Keras' `LossScaleOptimizer`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ddpm_tf import compat, editing, rng
from ddpm_tf import dropout as masks
from ddpm_tf.diffusion import GaussianDiffusion
from ddpm_tf.errors import InputError
from ddpm_tf.optimizers import default_optimizer
from ddpm_tf.sampling import (
    Sampler,
    SamplingSpec,
    call_network,
    check_labels,
    guided_denoiser,
    network_num_classes,
    resolve_spec,
)
from ddpm_tf.schedules import get_beta_schedule
from ddpm_tf.timesteps import TimestepSampler, TimestepSamplerName, create_timestep_sampler

_REPLICATED = "only_first_replica"


def _blend(ema: tf.Variable, weight: tf.Variable, decay) -> tf.Tensor:
    """One EMA update: ema <- decay * ema + (1 - decay) * weight."""
    decay = tf.cast(decay, ema.dtype)
    return ema.assign(decay * ema + (1.0 - decay) * tf.cast(weight, ema.dtype))


def default_diffusion() -> GaussianDiffusion:
    """Ho et al.'s process: linear betas over T=1000, epsilon prediction, fixed_large, L_simple."""
    return GaussianDiffusion(get_beta_schedule("linear", 1000))


def _image_shape(network: keras.Model) -> tuple[int, int, int]:
    config = network.get_config()
    if "image_size" in config and "in_channels" in config:
        return (config["image_size"], config["image_size"], config["in_channels"])
    inputs = getattr(network, "inputs", None)
    if inputs:
        shape = tuple(inputs[0].shape[1:])
        if len(shape) == 3 and None not in shape:
            return tuple(int(s) for s in shape)
    raise InputError(
        "`network` must say its image shape: a UNet (image_size, in_channels in its config) or a "
        "functional model whose first input is [B, H, W, C] with known H, W, C."
    )


@keras.saving.register_keras_serializable(package="ddpm_tf")
class DiffusionModel(keras.Model):
    """Trains `network` as the denoiser of `diffusion` (see the module docstring).

    Args:
        network: a Keras model called as network([x_t, t]) or network([x_t, t, y]) -> model output
            (C channels, 2C with a learned variance); a `ddpm_tf.UNet` or a functional model.
        diffusion: a `GaussianDiffusion` (or its config dict); default Ho et al.'s.
        ema_decay: EMA decay of the weights; with `ema_warmup` the decay at update n is
            min(ema_decay, (1 + n) / (10 + n)) so early averages are not dominated by the init.
        timestep_sampler: how training timesteps are drawn: "uniform", "loss-second-moment"
            (importance sampling on the loss history), or a `TimestepSampler`.
        grad_clip_norm: clip the global gradient norm to this (None: no clipping).
        label_dropout: probability of replacing a label by the null class while training a
            class-conditional network (classifier-free guidance).
        seed: seed of the training noise, timesteps and label dropout.
        sampling: how this model samples when no spec is given (a `SamplingSpec` or its dict):
            a distilled student's few-step sampler; None: `SamplingSpec()`, or the program's own.
    """

    def __init__(
        self,
        network: keras.Model,
        diffusion: GaussianDiffusion | dict | None = None,
        *,
        ema_decay: float = 0.9999,
        ema_warmup: bool = True,
        timestep_sampler: TimestepSamplerName | TimestepSampler = "uniform",
        grad_clip_norm: float | None = 1.0,
        label_dropout: float = 0.1,
        seed: int = 0,
        sampling: SamplingSpec | dict | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(sampling, dict):
            sampling = SamplingSpec.from_dict(sampling)
        if sampling is not None and not isinstance(sampling, SamplingSpec):
            raise InputError(f"`sampling` must be a SamplingSpec or its dict, got {sampling!r}.")
        self._sampling = sampling
        if isinstance(diffusion, dict):
            diffusion = GaussianDiffusion.from_config(diffusion)
        self.diffusion = diffusion if diffusion is not None else default_diffusion()
        if not 0.0 <= ema_decay < 1.0:
            raise InputError(f"`ema_decay` must be in [0, 1), got {ema_decay}.")
        if grad_clip_norm is not None and grad_clip_norm <= 0:
            raise InputError(f"`grad_clip_norm` must be > 0 or None, got {grad_clip_norm}.")
        if not 0.0 <= label_dropout < 1.0:
            raise InputError(f"`label_dropout` must be in [0, 1), got {label_dropout}.")
        self.network = network
        self.image_shape = _image_shape(network)
        self.num_classes = network_num_classes(network)
        self.ema_decay = float(ema_decay)
        self.ema_warmup = bool(ema_warmup)
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.label_dropout = float(label_dropout)
        self.seed = int(seed)
        if isinstance(timestep_sampler, str):
            self._timestep_sampler_name = timestep_sampler
            timestep_sampler = create_timestep_sampler(
                timestep_sampler, self.diffusion.num_timesteps
            )
        else:
            self._timestep_sampler_name = None
        if timestep_sampler.num_timesteps != self.diffusion.num_timesteps:
            raise InputError(
                f"`timestep_sampler` covers {timestep_sampler.num_timesteps} steps but the diffusion "
                f"has T={self.diffusion.num_timesteps}."
            )
        self.timestep_sampler = timestep_sampler
        self._check_network_output()
        self.ema_network = keras.models.clone_model(network)
        self.ema_network.set_weights(network.get_weights())
        self.ema_network.trainable = False
        self.step_counter = self._counter("step_counter")
        self.eval_counter = self._counter("eval_counter")
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "mse", "vb", "grad_norm", "vlb_bpd")
        }
        self._samplers: dict[SamplingSpec, Sampler] = {}
        self.built = True  # every weight exists: the network's shapes are fixed by its config

    # ------------------------------------------------------------------------------------ state
    @property
    def default_spec(self) -> SamplingSpec | None:
        """The spec `generate` and the programs sample with unless told (None: their own
        default); a distilled student's is its few-step sampler."""
        return self._sampling

    @property
    def step(self) -> int:
        """The number of finished training steps (restored with a checkpoint)."""
        return int(self.step_counter.numpy())

    @property
    def milestones(self) -> tuple[int, ...]:
        """Step counts after which a run evaluates and draws its grids, whatever its intervals:
        none here; a distillation's round ends."""
        return ()

    def checkpoint_variables(self) -> list[tf.Variable]:
        """Every variable a checkpoint must hold to resume training exactly, in a fixed order.

        The network, its EMA copy, the step and evaluation counters and the timestep sampler's
        state, listed explicitly (Keras 3 keeps sublayers in containers that the object graph of
        `tf.train.Checkpoint` does not reach), then any other weight the model tracks: a subclass
        that adds state with `add_weight` has it saved and restored with no further code.
        """
        listed = [
            *self.network.weights,
            *self.ema_network.weights,
            self.step_counter,
            self.eval_counter,
            *self.timestep_sampler.variables,
        ]
        seen = {id(v) for v in listed}
        return listed + [v for v in self.weights if id(v) not in seen]

    # ---------------------------------------------------------------------------------- plumbing
    def _counter(self, name: str) -> keras.Variable:
        """A step counter that every replica advances in step (any replica's write will do)."""
        return self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            name=name,
            aggregation=_REPLICATED,
        )

    def _check_network_output(self) -> None:
        """One call on a dummy batch: the output must have C or 2C channels as the diffusion needs."""
        x = tf.zeros((1, *self.image_shape))
        t = tf.zeros((1,), tf.int32)
        y = None if self.num_classes is None else tf.fill((1,), self.num_classes)
        out = call_network(self.network, x, t, y)
        self.diffusion.p_mean_variance(out, x, t)  # raises on a channel mismatch, naming it

    def call(self, inputs, training: bool | None = None):
        """The network's output for [x_t, t] or [x_t, t, y] (raw weights; EMA ones in `ema_network`)."""
        return self.network(inputs, training=training)

    def compile(
        self, optimizer: keras.optimizers.Optimizer | str | None = None, **kwargs: Any
    ) -> None:
        """Like `keras.Model.compile`; with no optimizer, Ho et al.'s Adam 2e-4 with 5000 warm-up steps."""
        super().compile(optimizer=optimizer or default_optimizer(), **kwargs)
        # Built here, outside the traced train step, so the step is traced once.
        self.optimizer.build(self.network.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None) -> None:
        """Skips Keras' symbolic build when every weight and the optimizer exist (see `compile`).

        Under a strategy, Keras' own version first reduces a batch across replicas to get its
        shapes, and an (images, labels) batch cannot be reduced under
        `MultiWorkerMirroredStrategy`: class-conditional training on several workers failed there.
        This overrides a private Keras hook, listed (and checked) in `ddpm_tf.compat.PRIVATE_APIS`.
        """
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compile_from_config(self, config: dict) -> None:
        """Restores the compiled state of a loaded `.keras` file (optimizer included)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def restart_evaluation_noise(self) -> None:
        """Restarts the draws of `test_step` (t and noise), so that each evaluation pass sees the same.

        `test_step` seeds batch i of a pass with (seed + 1, i), i counted by `eval_counter`;
        `evaluate` calls this first, so two evaluations of the same weights on the same batches
        give the same losses and bound, whatever ran between them (training, `reset_metrics`).
        A loop that calls `test_step` itself calls this where its pass starts.
        """
        self.eval_counter.assign(0)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """Keras' `evaluate`, after `restart_evaluation_noise` (every pass draws the same noise)."""
        self.restart_evaluation_noise()
        return super().evaluate(*args, **kwargs)

    def _check_images(self, images, name: str = "images") -> tf.Tensor:
        """float32 images [B, *image_shape] in [-1, 1], or an InputError saying what is wrong."""
        images = tf.convert_to_tensor(images)
        if not images.dtype.is_floating:
            raise InputError(
                f"DiffusionModel expects float {name} in [-1, 1], got dtype {images.dtype.name}; "
                "scale uint8 images with ddpm_tf.pixels.scale_to_unit."
            )
        if images.shape.rank != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise InputError(
                f"DiffusionModel expects {name} of shape [B, {', '.join(map(str, self.image_shape))}] "
                f"(the network's), got {images.shape}."
            )
        return tf.cast(images, tf.float32)

    def _unpack(self, data) -> tuple[tf.Tensor, tf.Tensor | None]:
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        images = self._check_images(images)
        if self.num_classes is None:
            return images, None
        if labels is None:
            raise InputError(
                f"The network is class-conditional (num_classes={self.num_classes}): "
                "the dataset must yield (images, labels)."
            )
        return tf.cast(images, tf.float32), tf.cast(tf.reshape(labels, [-1]), tf.int32)

    @staticmethod
    def _replica() -> tuple[int | tf.Tensor, int]:
        ctx = tf.distribute.get_replica_context()
        if ctx is None:
            return 0, 1
        return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync

    def _draw(self, base_seed, local_batch, replica, replicas, timestep_sampler: TimestepSampler):
        """t, weights, noise and a label-drop mask for this replica's rows of the global batch."""
        global_batch = local_batch * replicas
        t, weights = timestep_sampler.sample(global_batch, rng.fold_in(base_seed, 1))
        noise = rng.normal(
            tf.concat([[global_batch], self.image_shape], 0), rng.fold_in(base_seed, 2)
        )
        drop = rng.bits_to_unit(rng.uniform_bits([global_batch], rng.fold_in(base_seed, 3)))
        rows = tf.range(replica * local_batch, (replica + 1) * local_batch)
        return (tf.gather(v, rows) for v in (t, weights, noise, drop))

    def _forward(
        self, network, images, labels, t, noise, training
    ) -> tuple[dict, tf.Tensor, tf.Tensor]:
        x_t = self.diffusion.q_sample(images, t, noise)
        output = call_network(network, x_t, t, labels, training=training)
        terms = self.diffusion.losses_from_output(output, images, x_t, t, noise)
        return terms, x_t, output

    # -------------------------------------------------------------------------------- training
    def train_step(self, data):
        images, labels = self._unpack(data)
        replica, replicas = self._replica()
        seed = self._step_seed()
        t, weights, noise, drop = self._draw(
            seed, tf.shape(images)[0], replica, replicas, self.timestep_sampler
        )
        labels = self._drop_labels(labels, drop)
        with tf.GradientTape() as tape, self._dropout_masks(seed, images, replica):
            terms, _, _ = self._forward(self.network, images, labels, t, noise, training=True)
            loss = tf.reduce_mean(terms["loss"] * weights)
            scaled = self._scaled(loss, replicas)
        self._descend(tape, scaled, replicas)
        self._record_losses(t, terms["loss"], replicas)
        return self._report(terms, loss, ("grad_norm",))

    # One training step's shared parts, for `train_step` and its subclasses' (distillation).
    def _step_seed(self) -> tf.Tensor:
        """The seed of this step's draws: (seed, step), so a resumed run draws the same."""
        return rng.fold_in(rng.as_seed(self.seed), tf.cast(self.step_counter, tf.int32))

    def _drop_labels(self, labels, drop):
        """Labels with the null class where `drop` < label_dropout (classifier-free guidance)."""
        if labels is None:
            return None
        return tf.where(drop < self.label_dropout, self.num_classes, labels)

    def _dropout_masks(self, seed, images, replica):
        """The network's dropout masks of this replica's rows of the global batch."""
        return masks.rows(rng.fold_in(seed, 4), replica * tf.shape(images)[0])

    def _scaled(self, loss, replicas) -> tf.Tensor:
        """The loss each replica differentiates: 1/N of it, times the fp16 loss scale."""
        scaled = loss / replicas
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            scaled = self.optimizer.scale_loss(scaled)
        return scaled

    def _descend(self, tape: tf.GradientTape, scaled, replicas) -> None:
        """The update of a step: the gradient of `scaled`, clipped by its global norm, applied;
        then the EMA and the step counter."""
        variables = self.network.trainable_variables
        grads, grad_norm = self._reduce_and_clip(tape.gradient(scaled, variables), replicas)
        self.optimizer.apply(grads, variables)
        self._update_ema()
        self.step_counter.assign_add(1)
        self.trackers["grad_norm"].update_state(grad_norm)

    def _loss_scale(self) -> tf.Tensor:
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return tf.cast(self.optimizer.dynamic_scale, tf.float32)
        return tf.constant(1.0)

    def _reduce_and_clip(self, grads, replicas) -> tuple[list, tf.Tensor]:
        """Global gradient (summed over replicas), clipped by its unscaled global norm.

        Keras' optimizer sums the gradients of the replicas again, so each replica hands it 1/N of
        the clipped global gradient. A non-finite gradient (fp16 overflow) stays non-finite, so the
        LossScaleOptimizer still skips the step.
        """
        if replicas > 1:
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads
            )
        norm = tf.linalg.global_norm(grads) / self._loss_scale()
        factor = 1.0 / replicas
        if self.grad_clip_norm is not None:
            factor = factor * tf.minimum(1.0, self.grad_clip_norm / tf.maximum(norm, 1e-12))
        return [g * tf.cast(factor, g.dtype) for g in grads], norm

    def _record_losses(self, t, losses, replicas) -> None:
        if not self.timestep_sampler.learns_from_losses:
            return
        if replicas > 1:
            ctx = tf.distribute.get_replica_context()
            t, losses = ctx.all_gather(t, axis=0), ctx.all_gather(losses, axis=0)
        self.timestep_sampler.update_with_losses(t, tf.stop_gradient(losses))

    def ema_decay_now(self) -> tf.Tensor:
        """The decay of the next EMA update (warm-up: (1 + n) / (10 + n) while below ema_decay,
        n the `_ema_age`)."""
        if not self.ema_warmup:
            return tf.constant(self.ema_decay, tf.float32)
        n = tf.cast(self._ema_age(), tf.float32)
        return tf.minimum(self.ema_decay, (1.0 + n) / (10.0 + n))

    def _ema_age(self) -> tf.Tensor:
        """The updates the EMA's warm-up counts: every step (a distillation: its round's)."""
        return self.step_counter

    def _update_ema(self) -> None:
        decay = self.ema_decay_now()
        pairs = [
            (e.value, w.value)
            for e, w in zip(self.ema_network.weights, self.network.weights, strict=True)
        ]

        if not tf.distribute.has_strategy():
            for ema, weight in pairs:
                _blend(ema, weight, decay)
            return

        def update(strategy, decay):
            for ema, weight in pairs:
                strategy.extended.update(ema, _blend, args=(weight, decay), group=False)

        compat.merge_call(update, tf.distribute.get_strategy(), decay)

    def _report(self, terms: dict, loss: tf.Tensor, extra: tuple[str, ...]) -> dict:
        """Updates the loss trackers; returns the results of those that apply to this step."""
        self.trackers["loss"].update_state(loss)
        names = ["loss"]
        for name in ("mse", "vb"):
            if name in terms:
                self.trackers[name].update_state(tf.reduce_mean(terms[name]))
                names.append(name)
        results = {name: self.trackers[name].result() for name in (*names, *extra)}
        if compat.in_multi_worker_mode(self.distribute_strategy):
            # Keras reduces multi-worker logs with strategy.reduce(MEAN, axis=0), which fails on
            # scalars; a [1] vector reduces to the same scalar.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    # ------------------------------------------------------------------------------- evaluation
    def test_step(self, data):
        """Loss and an unbiased single-sample estimate of the full bound, in bits/dim, with EMA weights.

        For t uniform on [0, T), T * L_t + L_T has the bound as its expectation; its mean over the
        evaluation set estimates the test bits/dim (use `calc_bpd_loop` for the exact per-image sum).
        """
        images, labels = self._unpack(data)
        replica, replicas = self._replica()
        seed = rng.fold_in(rng.as_seed(self.seed + 1), tf.cast(self.eval_counter, tf.int32))
        uniform = TimestepSampler(self.diffusion.num_timesteps)
        t, weights, noise, _ = self._draw(seed, tf.shape(images)[0], replica, replicas, uniform)
        terms, x_t, output = self._forward(
            self.ema_network, images, labels, t, noise, training=False
        )
        vb = self.diffusion.vb_terms_bpd(output, images, x_t, t)
        bound = self.diffusion.num_timesteps * vb + self.diffusion.prior_bpd(images)
        self.trackers["vlb_bpd"].update_state(tf.reduce_mean(bound))
        self.eval_counter.assign_add(1)
        return self._report(terms, tf.reduce_mean(terms["loss"] * weights), ("vlb_bpd",))

    # --------------------------------------------------------------------------------- sampling
    def sampler(
        self, spec: SamplingSpec | None = None, *, classifier=None, **settings: Any
    ) -> Sampler:
        """The compiled `Sampler` for a `SamplingSpec` (built once per spec and classifier, then
        reused).

        `settings` are `SamplingSpec` fields applied over `spec` (default: `default_spec`, else
        `SamplingSpec()`):
        method (`ddpm_tf.sampling.METHODS`), steps, eta, solver_order, clip_denoised,
        dynamic_threshold, use_ema, noise_source ("philox" | "portable"), jit_compile. A
        `classifier` of noisy images (`ddpm_tf.guidance.NoisyClassifier`) adds classifier guidance.
        """
        spec = resolve_spec(spec if spec is not None else self.default_spec, settings)
        key = (spec, classifier)
        if key not in self._samplers:
            network = self.ema_network if spec.use_ema else self.network
            self._samplers[key] = Sampler(
                network, self.diffusion, self.image_shape, spec, classifier=classifier
            )
        return self._samplers[key]

    def generate(
        self,
        num_samples: int | None = None,
        seed: rng.SeedLike = 0,
        *,
        labels=None,
        guidance_scale: float = 1.0,
        classifier=None,
        classifier_scale: float = 1.0,
        spec: SamplingSpec | None = None,
        **settings: Any,
    ) -> tf.Tensor:
        """Samples float32 images [N, H, W, C] in [-1, 1], by default with the EMA weights.

        `spec` and `settings` choose the sampler as in `sampler()`, e.g. `method="ddim",
        steps=50`. Class-conditional networks take `labels` [N] (the null class num_classes gives
        unconditional samples) and a `guidance_scale` (1: conditional, >1: classifier-free
        guidance). A `classifier` of noisy images steers toward `labels` (then the classes asked
        of it) by `classifier_scale` (classifier guidance, `ddpm_tf.guidance`), for unconditional
        and class-conditional networks alike; guidance_scale 0 leaves a class-conditional
        network's null class to the classifier alone.
        """
        fn = self.sampler(spec, classifier=classifier, **settings)
        if classifier is not None:
            return fn(num_samples, seed, labels, guidance_scale, classifier_scale)
        if labels is not None:
            labels = check_labels(labels, self.num_classes, allow_null=True)
        return fn(num_samples if labels is None else labels.shape[0], seed, labels, guidance_scale)

    def denoiser(self, labels=None, guidance_scale=None, use_ema: bool = True):
        """A denoise_fn(x_t, t) over the (EMA) network, for `GaussianDiffusion`'s loops."""
        network = self.ema_network if use_ema else self.network
        return guided_denoiser(
            network,
            labels,
            guidance_scale,
            null_label=self.num_classes,
            learns_variance=self.diffusion.learns_variance,
        )

    # ---------------------------------------------------------------------------------- editing
    def _editing_denoiser(self, labels, guidance_scale, spec: SamplingSpec, batch: int):
        """The (EMA) network as a denoise_fn: conditional on `labels` [batch] (guided by the
        scale), or, without labels, a class-conditional network's null class at any batch."""
        network = self.ema_network if spec.use_ema else self.network
        if labels is None:
            if self.num_classes is None:
                return self.denoiser(use_ema=spec.use_ema)
            null = self.num_classes
            return lambda x_t, t: call_network(network, x_t, t, tf.fill(tf.shape(t), null))
        labels = check_labels(labels, self.num_classes, allow_null=True)
        if labels.shape[0] != batch:
            raise InputError(f"`labels` has {labels.shape[0]} entries for {batch} images.")
        return self.denoiser(labels, guidance_scale, spec.use_ema)

    def inpaint(
        self,
        images,
        mask,
        seed: rng.SeedLike = 0,
        *,
        labels=None,
        guidance_scale: float = 1.0,
        spec: SamplingSpec | None = None,
        resample: int = 1,
        jump: int = 10,
        **settings: Any,
    ) -> tf.Tensor:
        """`images` [B, H, W, C] in [-1, 1] kept where `mask` is 1 (any shape that broadcasts:
        per image or shared) and generated elsewhere (`ddpm_tf.editing.inpaint`): RePaint with
        `resample` rounds of `jump` steps for ancestral sampling and DDIM, plain replacement
        (resample 1) for every method."""
        spec = resolve_spec(spec, settings)
        images = self._check_images(images)
        denoise = self._editing_denoiser(labels, guidance_scale, spec, images.shape[0])
        return editing.inpaint(
            self.diffusion, denoise, images, mask, seed, spec, resample=resample, jump=jump
        )

    def img2img(
        self,
        images,
        strength: float,
        seed: rng.SeedLike = 0,
        *,
        labels=None,
        guidance_scale: float = 1.0,
        spec: SamplingSpec | None = None,
        **settings: Any,
    ) -> tf.Tensor:
        """SDEdit (`ddpm_tf.editing.img2img`): `images` [B, H, W, C] in [-1, 1] noised to
        strength * T and sampled back by the spec's method, its steps over the remaining part.
        Strength 0 returns the input, 1 is sampling from the input's trace."""
        spec = resolve_spec(spec, settings)
        images = self._check_images(images)
        denoise = self._editing_denoiser(labels, guidance_scale, spec, images.shape[0])
        return editing.img2img(self.diffusion, denoise, images, strength, seed, spec)

    def invert(self, images, steps=50, *, labels=None, guidance_scale: float = 1.0) -> tf.Tensor:
        """The DDIM latents x_T of `images` [B, H, W, C] in [-1, 1] over `steps` (the
        probability-flow ODE run up, `ddpm_tf.editing.invert`); `decode` maps them back."""
        images = self._check_images(images)
        spec = editing.inversion_spec(steps)
        denoise = self._editing_denoiser(labels, guidance_scale, spec, images.shape[0])
        return editing.invert(self.diffusion, denoise, images, spec)

    def decode(self, latents, steps=50, *, labels=None, guidance_scale: float = 1.0) -> tf.Tensor:
        """Deterministic DDIM sampling from `latents` [B, H, W, C] over `steps`."""
        latents = self._check_images(latents, "latents")
        spec = editing.inversion_spec(steps)
        denoise = self._editing_denoiser(labels, guidance_scale, spec, latents.shape[0])
        return editing.decode(self.diffusion, denoise, latents, spec)

    def interpolate(self, a, b, frames: int = 8, steps=50) -> tf.Tensor:
        """`frames` images [frames, B, H, W, C] morphing a into b (both [B, H, W, C]): their
        DDIM latents spherically interpolated and decoded (a class-conditional model uses its
        null class)."""
        a, b = self._check_images(a, "a"), self._check_images(b, "b")
        spec = editing.inversion_spec(steps)
        denoise = self._editing_denoiser(None, None, spec, a.shape[0])
        return editing.interpolate(self.diffusion, denoise, a, b, frames, spec)

    # ---------------------------------------------------------------------------- serialization
    def get_config(self) -> dict:
        timestep_sampler = self._timestep_sampler_name
        if timestep_sampler is None:
            timestep_sampler = (
                "loss-second-moment" if self.timestep_sampler.learns_from_losses else "uniform"
            )
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "diffusion": self.diffusion.get_config(),
            "ema_decay": self.ema_decay,
            "ema_warmup": self.ema_warmup,
            "timestep_sampler": timestep_sampler,
            "grad_clip_norm": self.grad_clip_norm,
            "label_dropout": self.label_dropout,
            "seed": self.seed,
            **({"sampling": self._sampling.to_dict()} if self._sampling is not None else {}),
        }

    @classmethod
    def from_config(cls, config: dict) -> DiffusionModel:
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)

    # ---------------------------------------------------------------------------- export
    KERAS_EXPORT_FORMATS = {"tf_saved_model": "saved_model", "litert": "tflite", "onnx": "onnx"}
    """Keras' `Model.export` format names, and the `ddpm_tf.exporting` format each one writes."""

    def export(
        self, filepath, format: str = "tf_saved_model", verbose=None, input_signature=None, **kwargs
    ) -> dict:
        """Keras' spelling of `ddpm_tf.exporting.export_model` for one format, verified.

        Writes the sampler and the denoiser in `format` to the directory `filepath` (with
        `manifest.json` and `verification.npz`, as `ddpm-export --out` does), runs each artifact in
        its own runtime against TensorFlow and returns the manifest; an artifact outside its
        tolerance raises `ExportVerificationError`. See docs/export.md.

        Args:
            filepath: the export directory (new or empty unless `overwrite=True`).
            format: "tf_saved_model", "litert" (TFLite) or "onnx", as in `keras.Model.export`.
            verbose: print where the export went.
            input_signature: not supported: the exported functions have fixed signatures.
            **kwargs: `overwrite`, and the fields of `ExportOptions` but `formats` (`spec`,
                `num_samples`, `guidance_scale`, `tflite_quantization`, `onnx_opset`, also
                spelled `opset_version` as in Keras, `verify_seed`).
        """
        from pathlib import Path

        from ddpm_tf.exporting import ExportOptions, export_model

        names = tuple(self.KERAS_EXPORT_FORMATS)
        if format in ("openvino", "torch"):
            raise InputError(
                f"DiffusionModel.export does not support Keras' format {format!r}: ddpm-tf "
                f"exports verified samplers as {names} only."
            )
        if format not in names:
            raise InputError(
                f"Unknown export format {format!r}; DiffusionModel.export takes one of {names} "
                "(Keras' names for ddpm-export's saved_model, tflite and onnx)."
            )
        if input_signature is not None:
            raise InputError(
                "DiffusionModel.export takes no `input_signature`: the exported sampler and "
                "denoiser have fixed signatures (docs/export.md)."
            )
        if Path(filepath).suffix in (".tflite", ".onnx", ".pb", ".keras"):
            raise InputError(
                f"`filepath` {str(filepath)!r} names a file; it is the export directory, which "
                "holds the artifacts and manifest.json."
            )
        overwrite = kwargs.pop("overwrite", False)
        if "opset_version" in kwargs:
            kwargs["onnx_opset"] = kwargs.pop("opset_version")
        options = ExportOptions(formats=(self.KERAS_EXPORT_FORMATS[format],), **kwargs)
        manifest = export_model(self, filepath, options, overwrite=overwrite)
        if verbose:
            print(f"Exported {format} to {filepath} (verified: manifest.json)")
        return manifest
