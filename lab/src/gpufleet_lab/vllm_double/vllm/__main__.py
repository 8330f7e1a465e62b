"""`python -m vllm ...` runs the vllm-test-double CLI."""

import sys

from .entrypoints.cli.main import main

sys.exit(main())
