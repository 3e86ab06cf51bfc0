"""`python -m ddpm_tf.training` is `ddpm-train`."""

import sys

from ddpm_tf.training.ddpm_train import main

sys.exit(main())
