"""The training program over `ddpm_tf`: `ddpm-train`, `ddpm-sample`, `ddpm-eval`, `ddpm-prepare`.

Configs are TOML presets in `training/configs/` overridden from the command line; see
`training.config` for the keys and `training.train` for the run directory it writes.
"""
