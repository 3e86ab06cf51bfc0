"""`python -m training` is `ddpm-train`."""

import sys

from training.train import main

sys.exit(main())
