"""The training programs, installed as `ddpm_tf.training`: ddpm-train, ddpm-sample, ddpm-eval,
ddpm-classifier and ddpm-prepare, with the TOML presets of ddpm-train in `configs/`.

Each program is a thin module: parse (`ddpm_tf.cli`), build from the library, run. `config.py`
reads ddpm-train's presets and overrides into the library's config (`ddpm_tf.config`), `callbacks.py` its Keras callbacks. No program imports
another; what two programs share lives in the library.
"""
