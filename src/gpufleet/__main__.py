"""`python -m gpufleet` is the `gpufleet` command."""

import sys

from gpufleet.cli import main

sys.exit(main())
