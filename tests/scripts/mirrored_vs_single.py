"""Trains the same model on one device and under MirroredStrategy on two logical CPUs; prints JSON.

Run in its own process: logical devices must be configured before TensorFlow initialises.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from ddpm_tf.distribute import logical_cpus, make_strategy  # noqa: E402

DEVICES = logical_cpus(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ddpm_tf import (  # noqa: E402
    DiffusionModel,
    GaussianDiffusion,
    from_preset,
    get_beta_schedule,
    sample_per_replica,
)
from ddpm_tf.distillation import DistillationModel, Rounds  # noqa: E402
from ddpm_tf.optimizers import FusedAdam  # noqa: E402

# Dropout on in both: the replicas must draw the masks of the global batch's rows, not copies.
CONFIGS = {
    "plain": {"net": {"dropout": 0.1}, "diffusion": {}, "sampler": "uniform"},
    "conditional_hybrid_importance": {
        "net": {"num_classes": 3, "learn_sigma": True, "dropout": 0.1},
        "diffusion": {"model_var_type": "learned_range", "loss_type": "rescaled_mse"},
        "sampler": "loss-second-moment",
    },
    # Progressive distillation (2 rounds of 2 steps: 8 -> 4 -> 2), its round started under the
    # strategy by the `Rounds` callback between the steps.
    "distillation": {
        "net": {"num_classes": 3, "dropout": 0.1},
        "diffusion": {"model_mean_type": "v"},
        "sampler": "uniform",
        "distill": {"student_steps": 2, "teacher_steps": 8, "round_steps": 2},
    },
}


def build(config):
    keras.utils.set_random_seed(0)
    diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000)[:100], **config["diffusion"])
    kind, extra = DiffusionModel, {}
    if "distill" in config:
        kind, extra = DistillationModel, config["distill"]
    model = kind(
        from_preset("tiny_8", **config["net"]),
        diffusion,
        ema_decay=0.9,
        seed=7,
        timestep_sampler=config["sampler"],
        label_dropout=0.3,
        **extra,
    )
    model.compile(FusedAdam(1e-3))  # the default optimizer, under both strategies
    return model


def dataset(conditional):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 16).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y) if conditional else x).batch(
        8, drop_remainder=True
    )


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def main(name):
    config = CONFIGS[name]
    conditional = "num_classes" in config["net"]
    single = build(config)
    strategy = make_strategy("mirrored", devices=DEVICES)
    with strategy.scope():
        mirrored = build(config)
    mirrored.network.set_weights(single.network.get_weights())
    mirrored.ema_network.set_weights(single.ema_network.get_weights())
    if "distill" in config:
        mirrored.teacher_network.set_weights(single.teacher_network.get_weights())
    init = single.network.get_weights()
    callbacks = [Rounds()] if "distill" in config else []
    h1 = single.fit(dataset(conditional), epochs=2, verbose=0, callbacks=callbacks).history
    callbacks = [Rounds()] if "distill" in config else []
    h2 = mirrored.fit(dataset(conditional), epochs=2, verbose=0, callbacks=callbacks).history
    moved = max_diff(single.network.get_weights(), init)
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "weights_max_diff": max_diff(single.network.get_weights(), mirrored.network.get_weights()),
        "ema_max_diff": max_diff(
            single.ema_network.get_weights(), mirrored.ema_network.get_weights()
        ),
        "weights_moved": moved,
        "loss_single": h1["loss"],
        "loss_mirrored": h2["loss"],
        "steps": [single.step, mirrored.step],
    }
    if config["sampler"] == "loss-second-moment":
        result["history_max_diff"] = float(
            np.abs(
                single.timestep_sampler.loss_history.numpy()
                - mirrored.timestep_sampler.loss_history.numpy()
            ).max()
        )
        result["counts"] = [
            int(m.timestep_sampler.loss_counts.numpy().sum()) for m in (single, mirrored)
        ]
    if "distill" in config:
        result["teacher_max_diff"] = max_diff(
            single.teacher_network.get_weights(), mirrored.teacher_network.get_weights()
        )
        result["teacher_moved"] = max_diff(single.teacher_network.get_weights(), init)
    if not conditional:
        images = sample_per_replica(
            strategy, mirrored.sampler(method="ddim", steps=5), 2, seed=3
        ).numpy()
        result["per_replica_shape"] = list(images.shape)
        result["replicas_differ"] = float(np.abs(images[:2] - images[2:]).max())
    return result


if __name__ == "__main__":
    print(json.dumps({name: main(name) for name in sys.argv[1:]}))
