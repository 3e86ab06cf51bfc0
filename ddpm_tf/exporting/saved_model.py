"""SavedModel writing through `keras.export.ExportArchive`, which tracks the raw variables so that
`saved_model_cli run` and TF Serving load the result."""

from __future__ import annotations

from pathlib import Path

import keras

from ddpm_tf.exporting.graphs import ExportedFunction

SERVING_DEFAULT = "serving_default"


def write_saved_model(path: str | Path, functions: list[ExportedFunction]) -> dict[str, str]:
    """Writes `functions` as signatures of a SavedModel at `path`; the first is `serving_default`.

    The archive tracks the variables that the functions use. The network itself is not tracked:
    TF would then trace the Keras model's default serving function, which a UNet cannot serve
    (it needs the timesteps). Returns {function name: signature key}.
    """
    archive = keras.export.ExportArchive()
    keys = {}
    for i, function in enumerate(functions):
        key = SERVING_DEFAULT if i == 0 else function.name
        archive.add_endpoint(key, function.fn, input_signature=function.signature)
        keys[function.name] = key
    archive.write_out(str(path), verbose=False)
    return keys
