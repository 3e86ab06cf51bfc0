"""One worker of a MultiWorkerMirroredStrategy run on loopback; TF_CONFIG comes from the parent.

Each worker fits a tiny model for a few steps on its shard of a global batch and writes its final
weights (as a digest and a checksum) to OUT_DIR/worker_<index>.json.
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from ddpm_tf.distribute import make_strategy  # noqa: E402

strategy = make_strategy("multi_worker")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ddpm_tf import DiffusionModel, GaussianDiffusion, from_preset, get_beta_schedule  # noqa: E402


def main(out_dir: str) -> None:
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = DiffusionModel(
            from_preset("tiny_8", dropout=0.1),  # the masks of each worker's rows
            GaussianDiffusion(get_beta_schedule("linear", 1000)[:100]),
            seed=5,
        )
        model.compile(keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)).astype("float32")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = tf.data.Dataset.from_tensor_slices(x).batch(8, drop_remainder=True).with_options(options)
    history = model.fit(ds, epochs=1, verbose=0).history
    weights = np.concatenate([w.ravel() for w in model.network.get_weights()])
    report = {
        "index": index,
        "replicas": strategy.num_replicas_in_sync,
        "loss": history["loss"],
        "steps": model.step,
        "digest": hashlib.sha256(weights.tobytes()).hexdigest(),
        "weights_sum": float(weights.sum()),
    }
    with open(os.path.join(out_dir, f"worker_{index}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
