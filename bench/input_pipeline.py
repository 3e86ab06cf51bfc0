"""Training input from memory against the same pixels read from a cache file on disk.

`data.step_batches` draws global batch s from rows perm_epoch(i) of a split, either gathered from
an in-memory array or read with `os.pread` from a `PixelCache` (the layout ddpm-train writes in
its run directory). This measures batches per second of the pipelines alone, alternating rounds,
for a few shapes: from memory; from disk cold, the cache file's pages evicted from the kernel's
page cache before the round (`posix_fadvise(DONTNEED)` after an fsync, as after a reboot or
when the file does not fit in memory; on a virtual disk the host may still cache it); and from
disk warm, the file read once before (as from the second epoch on, when it fits). Both deliver hundreds of batches per second or more, far above any
training rate, which is why ddpm-train reads every dataset from disk (`training/ddpm_train.py:
open_data`).

    python bench/input_pipeline.py
    python bench/input_pipeline.py --rounds 5 --batches 400
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import ddpm_tf  # noqa: E402, F401  (first: TensorFlow loads with the package's measured oneDNN choice)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine, time_calls  # noqa: E402

from ddpm_tf.data import step_batches  # noqa: E402
from ddpm_tf.datasets.pixel_cache import PIXELS, PixelCache  # noqa: E402

CASES = (  # (name, images, shape, batch)
    ("digits 8x8x1", 1_497, (8, 8, 1), 64),
    ("fashion 28x28x1", 60_000, (28, 28, 1), 64),
    ("cifar 32x32x3", 50_000, (32, 32, 3), 128),
    ("folder 64x64x3", 20_000, (64, 64, 3), 16),
)


def batches_per_second(dataset: tf.data.Dataset, batches: int) -> float:
    """Batches per second over `batches` batches after the first (the pipeline's start-up)."""
    iterator = iter(dataset)
    timing = time_calls(lambda: next(iterator), repeats=batches, warmup=1)
    return batches / sum(timing["times_s"])


def evict(cache: PixelCache) -> None:
    """Drops the cache file's pages from the kernel's page cache, so the next reads go to disk."""
    path = os.path.join(cache.directory, PIXELS)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--dir", help="where the cache files go (default: the system's temp dir)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    kinds = ("memory", "disk cold", "disk warm")
    print(f"{'split':<18} {'batch':>5} " + " ".join(f"{k + ' b/s':>13}" for k in kinds))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for name, count, shape, batch in CASES:
            images = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
            examples = tf.data.Dataset.from_tensor_slices((images, np.zeros(count, np.int32)))
            cache = PixelCache.build(
                os.path.join(tmp, name.split()[0]), examples, num_classes=None, source={}
            )
            rates = {kind: [] for kind in kinds}
            for round_ in range(args.rounds):
                order = kinds if round_ % 2 == 0 else kinds[::-1][1:] + kinds[-1:]
                for kind in order:  # "disk warm" always follows a read of the file
                    if kind == "disk cold":
                        evict(cache)
                    source = images if kind == "memory" else cache
                    stream = step_batches(source, batch_size=batch, seed=0, random_flip=True)
                    rates[kind].append(batches_per_second(stream, args.batches))
            medians = [float(np.median(rates[k])) for k in kinds]
            print(f"{name:<18} {batch:>5} " + " ".join(f"{m:>13.0f}" for m in medians))
    print("b/s: batches per second, median of the rounds")


if __name__ == "__main__":
    main()
