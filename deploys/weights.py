"""`pyinfra inventories/<fleet>.py deploys/weights.py`: the weights step only."""

from gpufleet.deploy import cli_target
from gpufleet.deploys.weights import weights

weights(cli_target())
