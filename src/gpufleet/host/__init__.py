"""The contract with a host: the names and paths gpufleet uses there (`layout`), the SSH
transport for everything that is not a pyinfra deploy (`ssh`), the readers of what systemd and
the services say (`systemctl`), and the scripts that run on the host with its own python3
(`scripts/`: read as text and sent over SSH; nothing imports them)."""
