"""`python -m ddpm_tf.export ...` runs the `ddpm-export` command line."""

import sys

from ddpm_tf.export.cli import main

sys.exit(main())
