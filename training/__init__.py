"""The training programs, installed as `ddpm_tf.training`: ddpm-train, ddpm-sample, ddpm-eval,
ddpm-classifier and ddpm-prepare, with the TOML presets of ddpm-train in `configs/`.

Each program is a thin module named after its command (`ddpm-eval`: `ddpm_eval.py`): parse
(`ddpm_tf.cli`), build from the library, run. Modules that serve ddpm-train alone start with its
name: `ddpm_train_presets.py` reads its presets and overrides into the library's config
(`ddpm_tf.config`), `ddpm_train_callbacks.py` holds its Keras callbacks and `ddpm_train_curve.py`
its `curve.csv`. No program imports another; what two programs share lives in the library.
"""
