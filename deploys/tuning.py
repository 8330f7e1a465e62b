"""`pyinfra inventories/<fleet>.py deploys/tuning.py`: the tuning step only."""

from gpufleet.deploy import cli_target
from gpufleet.deploys.tuning import tuning

tuning(cli_target())
