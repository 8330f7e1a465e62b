"""`gpufleet exporter INVENTORY [--listen ADDR]`: serve the fleet as Prometheus metrics — per GPU
and per service: planned and measured VRAM, planned KV tokens, health, restarts, and validate's
findings. Listens on loopback unless told otherwise."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.commands.hosts import add_host_options, chosen_hosts
from gpufleet.commands.validate import add_ssh_args
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.exporter import DEFAULT_INTERVAL_S, DEFAULT_LISTEN, MetricsServer, parse_listen
from gpufleet.livefleet import LiveFleet
from gpufleet.plan import build_plan


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("exporter", help=SUMMARIES["exporter"], description=__doc__)
    p.add_argument("inventory", metavar="INVENTORY")
    p.add_argument(
        "--listen", metavar="ADDR", default=DEFAULT_LISTEN,
        help=f"ADDRESS:PORT to serve /metrics on (default {DEFAULT_LISTEN}, loopback only; "
        "0.0.0.0:9835 for every address)",
    )
    p.add_argument(
        "--interval", metavar="SECONDS", type=float, default=DEFAULT_INTERVAL_S,
        help=f"read each host every SECONDS (default {DEFAULT_INTERVAL_S:g})",
    )
    add_host_options(p, "read")
    add_ssh_args(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, env: Environment) -> int:
    if args.interval < 1:
        raise InputError(f"--interval {args.interval:g}: read the hosts at most once a second")
    listen = parse_listen(args.listen)
    inv = inventory.load(args.inventory)
    plan = build_plan(inv, only_hosts=chosen_hosts(args, inv))
    fleet = LiveFleet(plan, interval=args.interval, ssh_key=args.ssh_key,
                      known_hosts=args.known_hosts, restarts=True)
    server = MetricsServer(plan, fleet, listen)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        url = server.start()
        env.err.print(f"serving {url} — {len(plan.hosts)} host(s), each read every "
                      f"{args.interval:g} s; Ctrl-C to stop", highlight=False)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        signal.signal(signal.SIGTERM, previous)
    return ExitStatus.OK
