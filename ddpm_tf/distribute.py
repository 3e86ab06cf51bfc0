"""Choosing a `tf.distribute` strategy by name, for the training program and for users.

Build the `DiffusionModel` inside `strategy.scope()`, batch the dataset with the global batch size
(`drop_remainder=True`) and call `fit` as usual: `DiffusionModel.train_step` draws the noise of the
whole global batch from one seed and clips the all-reduced gradient, so any number of replicas makes
the update one device would make on that batch.

- "default": no distribution (one device).
- "mirrored": all local GPUs, or the given devices (e.g. two logical CPUs in tests).
- "multi_worker": `MultiWorkerMirroredStrategy`; the cluster comes from the `TF_CONFIG`
  environment variable of each worker process.
- "tpu": `TPUStrategy` on the TPU named by `tpu` (a name, a grpc:// address, or "" / "local" for a
  TPU VM). On TPU, XLA compiles the whole step, so the model's shapes must be static: give the dataset
  `drop_remainder=True` and keep `num_steps` fixed when sampling. This path is written against the
  documented TPU API and cannot be exercised on machines without a TPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(
    name: str = "default", *, devices: Sequence[str] | None = None, tpu: str = ""
) -> tf.distribute.Strategy:
    """The strategy called `name` (one of STRATEGIES); see the module docstring."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu)
    raise ValueError(f"Unknown strategy {name!r} for `name`; choose one of {STRATEGIES}.")


def _tpu_strategy(tpu: str) -> tf.distribute.TPUStrategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise RuntimeError(
            f"No TPU could be reached for `tpu`={tpu!r} ({err}). On a TPU VM pass tpu='local'; "
            "elsewhere pass the TPU's name or grpc:// address, or use 'mirrored' / 'default'."
        ) from err
    return tf.distribute.TPUStrategy(resolver)


def logical_cpus(count: int) -> list[str]:
    """Splits the CPU into `count` logical devices (before TF initialises) and returns their names.

    This is how distribution is exercised on machines without accelerators.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count
    )
    return [device.name for device in tf.config.list_logical_devices("CPU")]
