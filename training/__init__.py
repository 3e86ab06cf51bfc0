"""The training programs, installed as `ddpm_tf.training`: ddpm-train, ddpm-sample, ddpm-eval,
ddpm-classifier, ddpm-distill and ddpm-prepare, with the TOML presets of ddpm-train in `configs/`.

Each program is a thin module named after its command (`ddpm-eval`: `ddpm_eval.py`): parse
(`ddpm_tf.cli`), build from the library, run. Modules that serve ddpm-train start with its name:
`ddpm_train_run.py` is its run (data, model, callbacks, `fit`), `ddpm_train_presets.py` reads its
presets and overrides into the library's config (`ddpm_tf.config`), `ddpm_train_callbacks.py`
holds its Keras callbacks and `ddpm_train_curve.py` its `curve.csv`; the runs of ddpm-distill
and `ddpm-classifier --noisy` reuse them. No program imports another program's module.
"""
