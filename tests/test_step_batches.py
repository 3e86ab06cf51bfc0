"""The step-indexed data stream of the training program: epochs are permutations, resume is free."""

import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_script

from ddpm_tf.data import load_arrays, step_batches

IMAGES = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * 20


def _labels(ds, steps):
    return np.concatenate([y.numpy() for (_, y), _ in zip(ds, range(steps), strict=False)])


def test_every_epoch_is_a_permutation_and_epochs_differ():
    stream = _labels(step_batches(IMAGES, np.arange(10), batch_size=4, seed=3), 10)  # 4 epochs
    epochs = stream.reshape(4, 10)
    for epoch in epochs:
        assert sorted(epoch) == list(range(10))
    assert len({tuple(e) for e in epochs}) > 1


def test_starting_at_a_step_continues_the_same_stream():
    full = _labels(step_batches(IMAGES, np.arange(10), batch_size=4, seed=3), 9)
    later = _labels(step_batches(IMAGES, np.arange(10), batch_size=4, seed=3, start_step=5), 4)
    np.testing.assert_array_equal(later, full[20:])
    other = _labels(step_batches(IMAGES, np.arange(10), batch_size=4, seed=4), 9)
    assert not np.array_equal(other, full)


def test_images_match_labels_and_are_scaled():
    for images, labels in step_batches(IMAGES, np.arange(10), batch_size=5).take(2):
        np.testing.assert_allclose(
            images.numpy()[:, 0, 0, 0], labels.numpy() * 20 / 127.5 - 1, rtol=1e-6
        )


def test_flips_are_seeded_by_step():
    images = np.zeros((4, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0] = 255  # left column bright
    ds = step_batches(images, batch_size=4, seed=0, random_flip=True)
    batches = [x.numpy() for x, _ in zip(ds, range(20), strict=False)]
    flipped = np.concatenate([b[:, 0, 1, 0] > 0 for b in batches])
    assert 0.25 < flipped.mean() < 0.75
    again = step_batches(images, batch_size=4, seed=0, random_flip=True, start_step=7)
    np.testing.assert_array_equal(next(iter(again)).numpy(), batches[7])


@pytest.mark.parametrize("pipelines", [2, 4])
def test_input_pipelines_read_their_rows_of_each_global_batch(pipelines):
    """Pipeline k of K yields rows [kB/K, (k+1)B/K) of global batch s, flips included, from any
    start step and across epoch boundaries: together they are the single-process stream."""
    images = np.random.default_rng(0).integers(0, 256, (10, 2, 3, 1), dtype=np.uint8)
    args = dict(batch_size=8, seed=5, start_step=3, random_flip=True)
    whole = list(step_batches(images, np.arange(10), **args).take(4))
    parts = [
        list(step_batches(images, np.arange(10), **args, input_context=context).take(4))
        for context in (
            tf.distribute.InputContext(pipelines, k, num_replicas_in_sync=pipelines)
            for k in range(pipelines)
        )
    ]
    for s, (x, y) in enumerate(whole):
        assert all(part[s][1].shape == (8 // pipelines,) for part in parts)
        np.testing.assert_array_equal(np.concatenate([p[s][0] for p in parts]), x.numpy())
        np.testing.assert_array_equal(np.concatenate([p[s][1] for p in parts]), y.numpy())
    unflipped = step_batches(images, np.arange(10), **{**args, "random_flip": False}).take(4)
    assert any(not np.array_equal(x, u) for (x, _), (u, _) in zip(whole, unflipped, strict=True))


# Logical devices must be configured before TensorFlow initialises: a fresh process.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    from ddpm_tf.distribute import logical_cpus
    devices = logical_cpus(2)
    import numpy as np
    import tensorflow as tf
    from ddpm_tf.data import distributed_step_batches, step_batches

    strategy = tf.distribute.MirroredStrategy(devices)
    args = dict(batch_size=4, seed=3, start_step=2)
    labels = np.arange(10)
    images = labels.astype(np.uint8).reshape(10, 1, 1, 1)
    stream = iter(distributed_step_batches(strategy, images, labels, **args))
    replicas = [
        [y.numpy().tolist() for y in strategy.experimental_local_results(next(stream)[1])]
        for _ in range(3)
    ]
    whole = [y.numpy().tolist() for _, y in step_batches(images, labels, **args).take(3)]
    print(json.dumps({"replicas": replicas, "whole": whole}))
    """
)


def test_the_replicas_of_one_worker_take_its_rows_in_order():
    """Two replicas on one machine: replica r holds rows [rB/2, (r+1)B/2) of each global batch."""
    result = run_script(MIRRORED_SCRIPT)
    assert [sum(parts, []) for parts in result["replicas"]] == result["whole"]
    assert all(len(part) == 2 for parts in result["replicas"] for part in parts)


def test_a_global_batch_that_does_not_split_over_the_replicas_is_refused():
    context = tf.distribute.InputContext(2, 0, num_replicas_in_sync=4)
    with pytest.raises(ValueError, match=r"batch size 6 is not divisible by the 4 replicas"):
        step_batches(IMAGES, batch_size=6, input_context=context)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(images=IMAGES.astype(np.float32)), "uint8"),
        (dict(batch_size=11), "larger than the dataset"),
        (dict(start_step=-1), "start_step"),
        (dict(labels=np.arange(3)), "3 entries for 10 images"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = dict(images=IMAGES, labels=None, batch_size=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        step_batches(args.pop("images"), args.pop("labels"), **args)


def test_load_arrays_reads_an_embedded_split(tmp_path):
    images, labels = load_arrays("sklearn_digits", "test", data_dir=str(tmp_path))
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
    assert labels.shape == (images.shape[0],) and set(np.unique(labels)) <= set(range(10))
    resized, none = load_arrays(
        "sklearn_digits", "test", data_dir=str(tmp_path), image_size=4, label_key=None
    )
    assert resized.shape == (images.shape[0], 4, 4, 1) and none is None
    expected = tf.image.resize(images[:3], (4, 4), method="area", antialias=True)
    np.testing.assert_array_equal(resized[:3], np.round(expected.numpy()).astype(np.uint8))
