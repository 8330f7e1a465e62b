"""`pyinfra inventories/<fleet>.py deploys/runtime.py`: the runtime step only."""

from gpufleet.deploy import cli_target
from gpufleet.deploys.runtime import runtime

runtime(cli_target())
