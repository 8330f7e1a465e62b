"""`pyinfra inventories/<fleet>.py deploys/rocm.py`: the rocm step only."""

from gpufleet.deploy import cli_target
from gpufleet.deploys.rocm import rocm

rocm(cli_target())
