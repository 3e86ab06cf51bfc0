"""Choosing a `tf.distribute` strategy by name, for the training program and for users.

Build the `DiffusionModel` inside `strategy.scope()`, batch the dataset with the global batch size
(`drop_remainder=True`) and call `fit` as usual: `DiffusionModel.train_step` draws the noise of the
whole global batch from one seed and clips the all-reduced gradient, so any number of replicas makes
the update one device would make on that batch.

- "default": no distribution (one device).
- "mirrored": all local GPUs, or the given devices (e.g. two logical CPUs in tests).
- "multi_worker": `MultiWorkerMirroredStrategy`; the cluster comes from the `TF_CONFIG`
  environment variable of each worker process (checked by `cluster_task` first). Make it before
  TensorFlow runs any op: collective ops can only be configured at program start.
- "tpu": `TPUStrategy` on the TPU named by `tpu` (a name, a grpc:// address, or "" / "local" for a
  TPU VM). On TPU, XLA compiles the whole step, so the model's shapes must be static: give the dataset
  `drop_remainder=True` and keep `num_steps` fixed when sampling. This path is written against the
  documented TPU API and cannot be exercised on machines without a TPU.

For a cluster, `cluster_task` and `check_cluster` check `TF_CONFIG` before anything starts,
`replica_values` gathers one number from every replica, and the `PreemptionCheckpoint` callback
saves a checkpoint on every worker when any of them receives SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf

from ddpm_tf import compat
from ddpm_tf.errors import InputError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
TRAINING_TASKS = ("chief", "worker")  # the task types MultiWorkerMirroredStrategy trains with
TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
    '"task": {"type": "worker", "index": 0}}\' on host0, "index": 1 on host1'
)


class ClusterConfigError(InputError):
    """TF_CONFIG is missing, malformed, or does not fit the chosen strategy."""


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in the cluster that TF_CONFIG describes."""

    type: str  # "chief" or "worker"
    index: int
    size: int  # training tasks in the cluster (the chief and the workers)

    def __str__(self) -> str:
        return f"{self.type} {self.index}"


def _is_address(value: object) -> bool:
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    return bool(host) and port.isdigit()


def _cluster(config: object) -> dict[str, list[str]]:
    """The training tasks of a parsed TF_CONFIG, checked."""
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(cluster.get(t) for t in TRAINING_TASKS):
        raise ClusterConfigError(
            'TF_CONFIG has no cluster with a "worker" (or "chief") list of host:port '
            f"addresses; set it like {TF_CONFIG_EXAMPLE}."
        )
    others = sorted(set(cluster) - set(TRAINING_TASKS))
    if others:
        raise ClusterConfigError(
            f"TF_CONFIG's cluster has {others} tasks, which MultiWorkerMirroredStrategy does not "
            'train with; list only "chief" and "worker" tasks.'
        )
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(_is_address(a) for a in addresses):
            raise ClusterConfigError(
                f'TF_CONFIG\'s cluster.{kind} must be a list of "host:port" strings, got '
                f"{addresses!r}."
            )
    if len(cluster.get("chief", [])) > 1:
        raise ClusterConfigError(
            "TF_CONFIG's cluster may have one chief only; make the rest workers."
        )
    return cluster


def cluster_task(environ: Mapping[str, str] | None = None) -> ClusterTask | None:
    """This process's task in the `TF_CONFIG` of `environ` (default os.environ); None if unset.

    Checked as MultiWorkerMirroredStrategy will read it, so that a mistake is one clear
    `ClusterConfigError` before any work instead of a failure (or a wait) inside TensorFlow.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ClusterConfigError(
            f"TF_CONFIG is not valid JSON ({err}); set it like {TF_CONFIG_EXAMPLE}."
        ) from None
    cluster = _cluster(config)
    task = config.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if (
        not isinstance(kind, str)
        or kind not in cluster
        or isinstance(index, bool)
        or not isinstance(index, int)
        or not 0 <= index < len(cluster[kind])
    ):
        tasks = ", ".join(f"{k} 0..{len(v) - 1}" for k, v in cluster.items() if v)
        raise ClusterConfigError(
            f'TF_CONFIG\'s task {task!r} is not a task of its cluster ({tasks}); set "task" to '
            'this process\'s type and index, e.g. {"type": "worker", "index": 1}.'
        )
    return ClusterTask(kind, index, sum(len(cluster.get(t, [])) for t in TRAINING_TASKS))


def check_cluster(name: str, environ: Mapping[str, str] | None = None) -> ClusterTask | None:
    """This process's task for strategy `name`, or a `ClusterConfigError` if TF_CONFIG does not fit.

    "multi_worker" needs a valid TF_CONFIG; the other strategies train on one machine, so a
    TF_CONFIG naming several tasks with them is a mistake (each process would train alone).
    """
    task = cluster_task(environ)
    if name == "multi_worker" and task is None:
        raise ClusterConfigError(
            "strategy 'multi_worker' reads its cluster from the TF_CONFIG environment variable, "
            f"which is not set; set it on every worker, like {TF_CONFIG_EXAMPLE}, or choose "
            "'mirrored' for the devices of one machine."
        )
    if name != "multi_worker" and task is not None and task.size > 1:
        raise ClusterConfigError(
            f"TF_CONFIG describes a cluster of {task.size} tasks but strategy {name!r} trains on "
            "this machine alone; choose 'multi_worker' (ddpm-train: train.strategy=multi_worker) "
            "or unset TF_CONFIG."
        )
    return task


def make_strategy(
    name: str = "default", *, devices: Sequence[str] | None = None, tpu: str = ""
) -> tf.distribute.Strategy:
    """The strategy called `name` (one of STRATEGIES); see the module docstring."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker":
        check_cluster(name)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu)
    raise InputError(f"Unknown strategy {name!r} for `name`; choose one of {STRATEGIES}.")


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


def replica_values(strategy: tf.distribute.Strategy, value: int) -> list[int]:
    """`value` as every replica of `strategy` holds it, in replica order.

    One collective: every worker of a cluster must call it at the same point.
    """

    def gather():
        local = tf.constant([value], tf.int64)
        return tf.distribute.get_replica_context().all_gather(local, axis=0)

    gathered = tf.function(lambda: strategy.run(gather))()
    return [int(v) for v in strategy.experimental_local_results(gathered)[0].numpy()]


class PreemptionCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint on every worker and stops `fit` after a SIGTERM to any worker.

    TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler` watches for SIGTERM and
    agrees with the other workers (through the cluster's coordination service) on the step at
    which all of them save; this callback asks it once per training step, after which `save()`
    has run on every worker and `preempted` is True. The handler also restores a checkpoint when
    it is made: the caller restores its own (e.g. `ddpm_tf.runs.RunDirectory.restore`), so the
    handler gets an empty checkpoint in an empty directory and never writes through it.

    Make it on every worker at the same point and give it to every worker's `fit`: the handler
    counts the steps it is asked at, and installs its SIGTERM handler (so: in the main thread).
    When training ends, the watching stops and SIGTERM does again what it did before.
    """

    def __init__(self, strategy: tf.distribute.Strategy, save: Callable[[], object]):
        super().__init__()
        self.preempted = False
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        config = tf.distribute.experimental.TerminationConfig(exit_fn=self._stop, save_fn=save)
        with tempfile.TemporaryDirectory() as empty:
            manager = tf.train.CheckpointManager(tf.train.Checkpoint(), empty, max_to_keep=1)
            self._handler = compat.preemption_checkpoint_handler(
                strategy.cluster_resolver, manager, config
            )

    def _stop(self) -> None:
        self.preempted = True

    def on_train_batch_end(self, batch, logs=None):
        self._handler.save_checkpoint_if_preempted()
        if self.preempted:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        compat.stop_preemption_watch(self._handler)
        signal.signal(signal.SIGTERM, self._previous_sigterm)
