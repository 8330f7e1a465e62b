"""pyinfra @deploy functions, one concern per module (rocm, tuning, runtime, weights, services).

They live in the package so gpufleet's API runner (gpufleet.deploy) and the thin files in the
repository's deploys/ (for `pyinfra inventories/<fleet>.py deploys/site.py`) run the same code.
Each takes a HostTarget: the host's part of the plan and its rendered files.
"""
