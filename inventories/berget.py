"""pyinfra inventory of the berget fleet, read from berget.yml (the single source of hosts).

    pyinfra inventories/berget.py deploys/site.py --dry
"""

from pathlib import Path

from gpufleet.deploy import pyinfra_hosts

gpu_hosts = pyinfra_hosts(Path(__file__).with_name("berget.yml"))
