"""`python -m ddpm_tf.export ...` runs the `ddpm-export` command line."""

import sys

from ddpm_tf.export.ddpm_export import main

sys.exit(main())
