"""`pyinfra inventories/<fleet>.py deploys/services.py`: the services step only."""

from gpufleet.deploy import cli_target
from gpufleet.deploys.services import services

services(cli_target())
