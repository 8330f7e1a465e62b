"""Subcommands: each module exposes add_parser(subparsers) and run(args, env).

SUMMARIES is each command's one line for `gpufleet --help`: the CLI lists every command from
it and imports only the module of the command it runs (deploy alone pulls in pyinfra, paramiko
and gevent, 0.6 s of imports that `plan` has no use for).
"""

SUMMARIES = {
    "plan": "plan GPU memory for every instance and GPU; report findings",
    "place": "choose GPUs, utilizations and parallelism from what services need",
    "estimate": "estimate one vLLM instance's memory and startup checks",
    "models": "list the bundled model catalog",
    "render": "write the systemd units and env files each host gets",
    "deploy": "provision hosts: ROCm, tuning, runtime, weights, units",
    "validate": "check the running fleet against the plan",
    "status": "one screen: every service's state, health and memory",
    "exporter": "serve the fleet's memory, health and findings as Prometheus metrics",
    "drift": "what differs between the hosts and the inventory",
    "rebuild": "bring one host back from bare OS to the planned state",
    "import": "write inventory YAML from the vLLM services on a host",
    "smi": "read rocm-smi / amd-smi output",
    "completion": "print a shell completion script (bash, zsh, fish)",
}
# Commands whose module is named otherwise.
MODULES = {"import": "adopt"}


def module_of(command: str) -> str:
    return f"gpufleet.commands.{MODULES.get(command, command)}"
