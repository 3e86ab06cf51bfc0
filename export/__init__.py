"""The export program, installed as `ddpm_tf.export`: ddpm-export, a thin command line over the
library's `ddpm_tf.exporting`."""
