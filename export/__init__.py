"""The `ddpm-export` program: exports a trained DiffusionModel as verified samplers.

A thin command line over `ddpm_tf.exporting`; see `export.cli.main`.
"""
