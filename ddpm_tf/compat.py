"""Every private or internal TensorFlow / Keras / tensorflow-datasets API that ddpm_tf uses, in one place.

Each wrapper below names the private API it uses, the public API it replaces (or why there is
none) and the versions it was checked against: TensorFlow 2.21.0, Keras 3.15.1 and
tensorflow-datasets 4.9.10 (:data:`CHECKED_VERSIONS`). When upgrading any of them, run
:func:`check_private_apis` (and ``tests/test_compat.py``): it names every private attribute that
has disappeared. :data:`PRIVATE_APIS` lists them all, wrapped here or not (a method ddpm_tf
overrides cannot be wrapped).

- :func:`merge_call` wraps ``tf.__internal__.distribute.interim.maybe_merge_call``.
- :func:`in_multi_worker_mode` wraps ``MultiWorkerMirroredStrategy.extended._in_multi_worker_mode``.
- :func:`preemption_checkpoint_handler` shadows ``failure_handling_util.on_gcp`` of
  ``tf.distribute.experimental.PreemptionCheckpointHandler``'s module while it makes one.
- :func:`stop_preemption_watch` calls ``PreemptionCheckpointHandler._stop_*_thread``.
- :class:`LocalFilesDownloadManager` overrides ``tfds.download.DownloadManager._download``.
- :func:`use_download_manager` shadows ``tfds.core.DatasetBuilder._make_download_manager``.
- :func:`in_xla_compilation` calls ``control_flow_util.GraphOrParentsInXlaContext``.
- :func:`adam_slots` reads ``keras.optimizers.Adam``'s ``_get_variable_index``, ``_momentums`` and
  ``_velocities`` (for :class:`ddpm_tf.optimizers.FusedAdam`).
- ``DiffusionModel._maybe_symbolic_build`` overrides Keras' private
  ``keras.Model._maybe_symbolic_build`` (the hook ``fit`` calls before its first step).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

__all__ = [
    "CHECKED_VERSIONS",
    "PRIVATE_APIS",
    "LocalFilesDownloadManager",
    "PrivateApi",
    "adam_slots",
    "check_private_apis",
    "in_multi_worker_mode",
    "in_xla_compilation",
    "merge_call",
    "preemption_checkpoint_handler",
    "stop_preemption_watch",
    "use_download_manager",
]

T = TypeVar("T")

# The versions every wrapper in this module was read and tested against.
CHECKED_VERSIONS: dict[str, str] = {
    "tensorflow": "2.21.0",
    "keras": "3.15.1",
    "tensorflow-datasets": "4.9.10",
}


def _mwms_module() -> object:
    # MultiWorkerMirroredStrategy's extended class (CollectiveAllReduceExtended) has no public
    # name; it lives in the module that defines the strategy.
    return importlib.import_module(tf.distribute.MultiWorkerMirroredStrategy.__module__)


def _failure_handling_module() -> object:
    # The module that defines PreemptionCheckpointHandler imports failure_handling_util, whose
    # detect_platform() it calls when a handler is made.
    return importlib.import_module(
        tf.distribute.experimental.PreemptionCheckpointHandler.__module__
    )


class PrivateApi(NamedTuple):
    """Where a private API is: the object `root()` returns, then the dotted `path` below it.

    `method` False marks a data attribute (checked present, not callable).
    """

    root: Callable[[], object]
    path: str
    method: bool = True


def _built_adam() -> keras.optimizers.Adam:
    # Adam makes its slot lists in build(): a built one (of one weight) has them.
    optimizer = keras.optimizers.Adam()
    optimizer.build([keras.Variable(tf.zeros([1]))])
    return optimizer


# Name shown to users -> where it is. Looked up, never called.
PRIVATE_APIS: dict[str, PrivateApi] = {
    "tf.__internal__.distribute.interim.maybe_merge_call": PrivateApi(
        lambda: tf,
        "__internal__.distribute.interim.maybe_merge_call",
    ),
    "tf.distribute.MultiWorkerMirroredStrategy.extended._in_multi_worker_mode": PrivateApi(
        _mwms_module,
        "CollectiveAllReduceExtended._in_multi_worker_mode",
    ),
    "tf.distribute.experimental.PreemptionCheckpointHandler: failure_handling_util.on_gcp": PrivateApi(
        _failure_handling_module,
        "failure_handling_util.on_gcp",
    ),
    "tf.distribute.experimental.PreemptionCheckpointHandler._stop_poll_termination_signal_thread": PrivateApi(
        lambda: tf.distribute.experimental,
        "PreemptionCheckpointHandler._stop_poll_termination_signal_thread",
    ),
    "tf.distribute.experimental.PreemptionCheckpointHandler._stop_cluster_wise_termination_watcher_thread": PrivateApi(
        lambda: tf.distribute.experimental,
        "PreemptionCheckpointHandler._stop_cluster_wise_termination_watcher_thread",
    ),
    "tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext": PrivateApi(
        lambda: importlib.import_module("tensorflow.python.ops.control_flow_util"),
        "GraphOrParentsInXlaContext",
    ),
    "tensorflow.python.util._pywrap_util_port.IsMklEnabled": PrivateApi(
        lambda: importlib.import_module("tensorflow.python.util._pywrap_util_port"),
        "IsMklEnabled",
    ),
    "keras.optimizers.Optimizer._get_variable_index": PrivateApi(
        lambda: keras.optimizers.Optimizer, "_get_variable_index"
    ),
    "keras.optimizers.Adam._momentums": PrivateApi(_built_adam, "_momentums", method=False),
    "keras.optimizers.Adam._velocities": PrivateApi(_built_adam, "_velocities", method=False),
    "keras.Model._maybe_symbolic_build": PrivateApi(lambda: keras.Model, "_maybe_symbolic_build"),
    "tfds.download.DownloadManager._download": PrivateApi(
        lambda: tfds, "download.DownloadManager._download"
    ),
    "tfds.core.DatasetBuilder._make_download_manager": PrivateApi(
        lambda: tfds,
        "core.DatasetBuilder._make_download_manager",
    ),
}


def check_private_apis() -> list[str]:
    """Names of the private APIs in :data:`PRIVATE_APIS` missing (or not callable) in this install.

    Each is looked up with ``getattr`` only, never called (Adam's slot lists on a freshly built
    Adam of one weight), so this is cheap. An empty list means every wrapper in this module can
    work; anything else means an upgrade of TensorFlow, Keras or tensorflow-datasets removed or
    renamed something and the code that uses it needs a fix.
    """
    missing = []
    for name, api in PRIVATE_APIS.items():
        try:
            target = api.root()
            for attr in api.path.split("."):
                target = getattr(target, attr)
        except (AttributeError, ImportError):
            missing.append(name)
            continue
        if api.method and not callable(target):
            missing.append(name)
    return missing


# --------------------------------------------------------------------------------- tf.distribute


def merge_call(fn: Callable[..., T], strategy: tf.distribute.Strategy, *args: Any) -> T:
    """Runs ``fn(strategy, *args)`` once in cross-replica context when the strategy needs it.

    Wraps ``tf.__internal__.distribute.interim.maybe_merge_call`` (TensorFlow 2.21.0), the call
    Keras 3's TensorFlow optimizer makes for its own variable updates. The public
    ``tf.distribute.get_replica_context().merge_call(fn, args=args)`` always merges; the internal
    one skips the merge where the strategy opts out of merge_call (Mirrored and MultiWorkerMirrored
    strategies compiled with XLA on all-GPU devices) and then calls ``fn(strategy, *args)``
    directly in replica context, as Keras does. Per-replica ``args`` reach ``fn`` as
    ``PerReplica`` values when merged.
    """
    return tf.__internal__.distribute.interim.maybe_merge_call(fn, strategy, *args)


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its oneDNN kernels (``TF_ENABLE_ONEDNN_OPTS``, or
    TensorFlow's default for the CPU, as read when TensorFlow loaded)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def in_xla_compilation() -> bool:
    """Whether the graph being built (or one it is nested in) will be compiled with XLA.

    Calls ``control_flow_util.GraphOrParentsInXlaContext`` on the default graph (TensorFlow
    2.21.0): ``tf.function(jit_compile=True)`` traces its body inside an XLA context, which this
    finds. There is no public equivalent; ops without an XLA kernel (the fused kernels of
    :mod:`ddpm_tf.kernels`) ask it to stay out of such graphs. False when executing eagerly.
    """
    if tf.executing_eagerly():
        return False
    module = importlib.import_module("tensorflow.python.ops.control_flow_util")
    return bool(module.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def in_multi_worker_mode(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy that spans more than one worker.

    Wraps ``strategy.extended._in_multi_worker_mode()`` (TensorFlow 2.21.0), asked only of a
    ``tf.distribute.MultiWorkerMirroredStrategy``; every other strategy gives False. There is no
    public equivalent: ``strategy.cluster_resolver`` exposes the cluster, but counting its
    workers would repeat TensorFlow's own rules for which tasks are workers.
    """
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()
    )


def preemption_checkpoint_handler(
    cluster_resolver: tf.distribute.cluster_resolver.ClusterResolver | None,
    manager: tf.train.CheckpointManager,
    termination_config: tf.distribute.experimental.TerminationConfig,
) -> tf.distribute.experimental.PreemptionCheckpointHandler:
    """A ``PreemptionCheckpointHandler`` that takes SIGTERM as the preemption notice on any machine.

    Making a handler asks ``failure_handling_util.detect_platform()`` (TensorFlow 2.21.0) for the
    platform, which first calls ``on_gcp()``: an HTTP request to Google Compute Engine's metadata
    server (a DNS look-up and up to 5 s on machines without that server). On GCE the handler then
    polls GCE's maintenance events instead of SIGTERM, and on GCE CPU machines does nothing at
    all. This wrapper answers ``on_gcp`` with False while the handler is made, so that SIGTERM is
    the notice everywhere (TensorFlow's own behaviour off Google's platforms) and nothing goes to
    the network. No public option skips the detection.
    """
    util = _failure_handling_module().failure_handling_util
    on_gcp = util.on_gcp
    util.on_gcp = lambda: False
    try:
        return tf.distribute.experimental.PreemptionCheckpointHandler(
            cluster_resolver, manager, termination_config=termination_config
        )
    finally:
        util.on_gcp = on_gcp


def stop_preemption_watch(handler: tf.distribute.experimental.PreemptionCheckpointHandler) -> None:
    """Stops the threads with which ``handler`` watches for a SIGTERM to this or another worker.

    Calls the private ``_stop_poll_termination_signal_thread`` and
    ``_stop_cluster_wise_termination_watcher_thread`` (TensorFlow 2.21.0), which the handler
    itself calls after its preemption checkpoint and from ``__del__``. When training ends
    normally, ``__del__`` may come too late: the thread that waits on the cluster's coordination
    service for another worker's SIGTERM is still waiting when the chief, which serves it, exits,
    and dies with an UnavailableError traceback. There is no public way to stop watching.
    """
    handler._stop_poll_termination_signal_thread()
    handler._stop_cluster_wise_termination_watcher_thread()


# ------------------------------------------------------------------------------------------ keras


def adam_slots(optimizer: keras.optimizers.Adam, variable: Any) -> tuple[Any, Any]:
    """(first moment, second moment): the slot variables of a built Adam for one of its weights.

    Reads ``optimizer._momentums[optimizer._get_variable_index(variable)]`` and the same of
    ``_velocities`` (Keras 3.15.1), as Keras' own ``Adam.update_step`` does. Keras has no public
    map from a weight to its slots: ``optimizer.variables`` lists them in an order that is Keras'
    own business.
    """
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]


# --------------------------------------------------------------------------- tensorflow-datasets


class LocalFilesDownloadManager(tfds.download.DownloadManager):
    """A download manager that serves requested URLs from local files and never downloads.

    Lets tfds' own builders (e.g. ``mnist``) prepare from files already on disk. A URL is
    answered by the local file with the same base name (``.gz`` stripped, since the files are
    handed out already decompressed); any other request is an error. ``served`` records the
    names handed out, so a caller can tell whether the builder asked for them at all.

    Overrides the public ``download`` / ``download_and_extract`` (the only routes tfds' mnist
    builders use) and the private ``_download`` (tensorflow-datasets 4.9.10), the one method
    through which the base class reaches the network, so any other route fails instead of
    downloading. tfds has no public way to hand a builder local files: ``manual_dir`` only
    serves builders that declare manual downloads, and pre-filling the download cache depends on
    tfds' internal file naming and checksums.
    """

    def __init__(self, files: Mapping[str, Path], source_bytes: int, **kwargs: Any) -> None:
        """``files`` maps any keys to the local paths; ``kwargs`` go to ``DownloadManager``."""
        super().__init__(**kwargs)
        self._local_files = {path.name: path for path in files.values()}
        self._source_bytes = source_bytes
        self.served: set[str] = set()  # names of the files handed out

    @property
    def downloaded_size(self) -> int:
        return self._source_bytes

    def _resolve(self, url_or_urls: Any) -> Any:
        if isinstance(url_or_urls, Mapping):
            return {k: self._resolve(v) for k, v in url_or_urls.items()}
        if isinstance(url_or_urls, list | tuple):
            return type(url_or_urls)(self._resolve(v) for v in url_or_urls)
        url = getattr(url_or_urls, "url", None) or os.fspath(url_or_urls)
        name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gz")
        if name not in self._local_files:
            raise RuntimeError(
                f"the tfds builder requested {url!r}, which has no local counterpart among "
                f"{sorted(self._local_files)}; this tensorflow-datasets version ("
                f"{tfds.__version__}) asks for other files than were provided"
            )
        self.served.add(name)
        return tfds.core.Path(self._local_files[name])

    def download(self, url_or_urls: Any) -> Any:
        return self._resolve(url_or_urls)

    def download_and_extract(self, url_or_urls: Any) -> Any:
        return self._resolve(url_or_urls)

    def _download(self, resource: Any) -> Any:  # any other route to the network is a bug
        raise RuntimeError(f"refusing to download {resource} while preparing from local files")


_MANAGER_HOOK = "_make_download_manager"


@contextlib.contextmanager
def use_download_manager(
    builder: tfds.core.DatasetBuilder, manager: tfds.download.DownloadManager
) -> Iterator[None]:
    """Makes ``builder.download_and_prepare()`` use ``manager`` inside the ``with`` block.

    Shadows the private ``DatasetBuilder._make_download_manager`` (tensorflow-datasets 4.9.10)
    with an instance attribute that returns ``manager``, and removes it on exit.
    ``download_and_prepare`` takes no download manager, so there is no public way to inject one.

    Raises:
        RuntimeError: this tensorflow-datasets has no ``DatasetBuilder._make_download_manager``.
    """
    if not callable(getattr(type(builder), _MANAGER_HOOK, None)):
        raise RuntimeError(
            f"tensorflow-datasets {tfds.__version__} has no DatasetBuilder.{_MANAGER_HOOK}; "
            f"ddpm_tf.compat was checked against {CHECKED_VERSIONS['tensorflow-datasets']}"
        )
    setattr(builder, _MANAGER_HOOK, lambda *_, **__: manager)  # shadows the method
    try:
        yield
    finally:
        delattr(builder, _MANAGER_HOOK)
