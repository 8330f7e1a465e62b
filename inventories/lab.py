"""pyinfra inventory of the test lab: lab.yml (written by `gpufleet lab`), or GPUFLEET_INVENTORY.

The lab also sets GPUFLEET_SSH_KEY, GPUFLEET_KNOWN_HOSTS and GPUFLEET_SETTINGS (a YAML file of
gpufleet_* settings: mirror URLs, driver/weights/tuning off).
"""

import os
from pathlib import Path

from gpufleet.deploy import pyinfra_hosts

gpu_hosts = pyinfra_hosts(
    os.environ.get("GPUFLEET_INVENTORY") or Path(__file__).with_name("lab.yml")
)
