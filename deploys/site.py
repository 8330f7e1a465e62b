"""`pyinfra inventories/<fleet>.py deploys/site.py [--dry]`: every step, in order.

The logic lives in gpufleet.deploys (shared with `gpufleet deploy`); choose steps with
`--data gpufleet_steps=rocm,services`.
"""

from gpufleet.deploy import cli_steps, cli_target
from gpufleet.deploys.site import site

site(cli_target(), steps=cli_steps())
