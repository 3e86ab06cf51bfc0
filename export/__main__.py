"""`python -m export ...` runs the `ddpm-export` command line."""

import sys

from export.cli import main

sys.exit(main())
