"""ddpm_tf.compat: the wrappers around private TensorFlow / tensorflow-datasets APIs.

If ``test_private_apis_are_present`` fails after an upgrade, the named private API is gone and
the wrapper in ddpm_tf/compat.py that uses it needs a new implementation.
"""

from __future__ import annotations

import textwrap

import keras
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import run_script

from ddpm_tf import compat


def test_private_apis_are_present():
    missing = compat.check_private_apis()
    assert missing == [], (
        f"private APIs missing in tensorflow {tf.__version__} / tensorflow-datasets "
        f"{tfds.__version__} (ddpm_tf.compat was checked against {compat.CHECKED_VERSIONS}): "
        f"{missing}; update the wrappers in ddpm_tf/compat.py"
    )


def test_check_private_apis_names_a_removed_attribute(monkeypatch):
    monkeypatch.delattr(tfds.download.DownloadManager, "_download")
    monkeypatch.delattr(tfds.core.DatasetBuilder, "_make_download_manager")
    assert compat.check_private_apis() == [
        "tfds.download.DownloadManager._download",
        "tfds.core.DatasetBuilder._make_download_manager",
    ]


def _owner(cls: type, name: str) -> type:
    """The class of `cls`'s method resolution order that defines `name`."""
    return next(c for c in cls.__mro__ if name in vars(c))


def test_check_private_apis_names_removed_keras_apis(monkeypatch):
    for cls, name in (
        (keras.optimizers.Optimizer, "_get_variable_index"),
        (keras.Model, "_maybe_symbolic_build"),
    ):
        monkeypatch.delattr(_owner(cls, name), name)
    # An Adam that no longer keeps its slots in _momentums / _velocities: the base build only.
    monkeypatch.setattr(keras.optimizers.Adam, "build", keras.optimizers.Optimizer.build)
    assert compat.check_private_apis() == [
        "keras.optimizers.Optimizer._get_variable_index",
        "keras.optimizers.Adam._momentums",
        "keras.optimizers.Adam._velocities",
        "keras.Model._maybe_symbolic_build",
    ]


def test_adam_slots_are_the_moments_keras_adam_updates():
    weight = keras.Variable([1.0, -2.0])
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build([weight])
    optimizer.apply([tf.constant([0.5, 0.25])], [weight])
    momentum, velocity = compat.adam_slots(optimizer, weight)
    # After one step from zero moments: m = (1 - b1) g, v = (1 - b2) g^2.
    assert momentum.numpy() == pytest.approx([0.05, 0.025])
    assert velocity.numpy() == pytest.approx([0.000250, 0.0000625])


# --- tf.distribute ---------------------------------------------------------------------------


def test_in_multi_worker_mode_false_for_single_process_strategies():
    assert compat.in_multi_worker_mode(tf.distribute.get_strategy()) is False
    assert compat.in_multi_worker_mode(tf.distribute.MirroredStrategy(["/cpu:0"])) is False


def test_in_multi_worker_mode_asks_a_multi_worker_strategy():
    # A real multi-worker cluster needs several processes (tests/test_distributed.py, slow);
    # here a MultiWorkerMirroredStrategy whose `extended` answers like one in a 2-worker cluster.
    class _Extended:
        def __init__(self, answer: bool) -> None:
            self.answer = answer

        def _in_multi_worker_mode(self) -> bool:
            return self.answer

    class _Strategy(tf.distribute.MultiWorkerMirroredStrategy):
        def __init__(self, extended: _Extended) -> None:  # skips the cluster set-up
            self._extended = extended

    assert compat.in_multi_worker_mode(_Strategy(_Extended(True))) is True
    assert compat.in_multi_worker_mode(_Strategy(_Extended(False))) is False


# Logical devices must be configured before TensorFlow initialises, so this runs in a fresh
# process (as tests/scripts/mirrored_vs_single.py and test_data's distribution test do).
MERGE_CALL_SCRIPT = textwrap.dedent(
    """
    import json
    from ddpm_tf.distribute import logical_cpus
    devices = logical_cpus(2)
    import tensorflow as tf
    from ddpm_tf import compat

    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        counter = tf.Variable(0.0)
    calls, after = [], []

    def merged(merge_strategy, value):
        calls.append({
            "cross_replica": tf.distribute.in_cross_replica_context(),
            "replica_context": tf.distribute.get_replica_context() is not None,
            "same_strategy": merge_strategy is strategy,
            "values": len(merge_strategy.experimental_local_results(value)),
        })
        merge_strategy.extended.update(
            counter, lambda var, inc: var.assign_add(inc), args=(1.0,), group=False
        )

    @tf.function
    def step():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            value = tf.cast(context.replica_id_in_sync_group, tf.float32)
            compat.merge_call(merged, tf.distribute.get_strategy(), value)
            after.append(tf.distribute.in_cross_replica_context())
        strategy.run(replica_fn)

    step()
    step()
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "calls": calls,
        "after": after,
        "counter": [float(v) for v in strategy.experimental_local_results(counter)],
        "multi_worker": compat.in_multi_worker_mode(strategy),
    }))
    """
)


def test_merge_call_runs_once_in_cross_replica_context_on_two_cpus():
    result = run_script(MERGE_CALL_SCRIPT)
    assert result["replicas"] == 2
    # Traced once for both replicas: fn saw the strategy, both replicas' values, no replica.
    assert result["calls"] == [
        {"cross_replica": True, "replica_context": False, "same_strategy": True, "values": 2}
    ]
    assert result["after"] == [False, False]  # each replica function is back in replica context
    assert result["counter"] == [2.0, 2.0]  # one update per step on each copy, not one per replica
    assert result["multi_worker"] is False


# --- tensorflow-datasets ---------------------------------------------------------------------

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


@pytest.fixture
def local_manager(tmp_path):
    files = {}
    for name in IDX:
        files[name] = tmp_path / name
        files[name].write_bytes(b"idx")
    manager = compat.LocalFilesDownloadManager(
        files, source_bytes=123, download_dir=tmp_path / "downloads", dataset_name="mnist"
    )
    return manager, files


def test_local_files_download_manager_serves_local_files(local_manager):
    manager, files = local_manager
    url = "https://example.org/mnist/train-images-idx3-ubyte.gz"
    assert manager.download(url) == tfds.core.Path(files[IDX[0]])
    got = manager.download_and_extract(
        {"a": tfds.download.Resource(url=url), "b": [f"https://h/{IDX[1]}"]}
    )
    assert got == {"a": tfds.core.Path(files[IDX[0]]), "b": [tfds.core.Path(files[IDX[1]])]}
    assert manager.served == set(IDX)
    assert manager.downloaded_size == 123


def test_local_files_download_manager_never_downloads(local_manager):
    manager, _ = local_manager
    with pytest.raises(RuntimeError, match="no local counterpart"):
        manager.download("https://example.org/t10k-images-idx3-ubyte.gz")
    with pytest.raises(RuntimeError, match="refusing to download"):
        manager._download(tfds.download.Resource(url="https://example.org/x"))
    assert manager.served == set()


def test_use_download_manager_installs_and_removes_the_hook(local_manager, tmp_path):
    manager, _ = local_manager
    builder = tfds.builder("mnist", data_dir=str(tmp_path / "data"))
    with compat.use_download_manager(builder, manager):
        config = tfds.download.DownloadConfig()
        assert builder._make_download_manager(download_dir=None, download_config=config) is manager
    assert "_make_download_manager" not in vars(builder)
    with (
        pytest.raises(RuntimeError, match="has no DatasetBuilder._make_download_manager"),
        compat.use_download_manager(object(), manager),
    ):
        pass
