"""The last known-good set of a host's gpufleet files: kept before a change, put back after a
failed one. The scripts run on the host (POSIX sh); `restore` reports what it touched, and the
rollout decides what that means (gpufleet.rollout)."""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.host.layout import (
    CONFIG_DIR,
    KNOWN_GOOD,
    STATE_DIR,
    TARGET,
    UNIT_DIR,
    UNIT_GLOB,
    owner_of,
    service_of,
    unit_name,
    unit_path,
)
from gpufleet.host.ssh import Session

# The gpufleet files of a host, kept before each change: units and the target, and the top-level
# files of /etc/gpufleet (env files, plan.json). Built beside the old set, then swapped in, so a
# failure at any point leaves a complete known-good set.
SNAPSHOT = f"""set -e
umask 077
rm -rf {KNOWN_GOOD}.new {KNOWN_GOOD}.old
mkdir -p {KNOWN_GOOD}.new/systemd {KNOWN_GOOD}.new/gpufleet
for f in {UNIT_DIR}/{UNIT_GLOB} {UNIT_DIR}/{TARGET}; do
  [ -f "$f" ] && cp -a "$f" {KNOWN_GOOD}.new/systemd/
done
[ ! -d {CONFIG_DIR} ] || find {CONFIG_DIR} -maxdepth 1 -type f ! -name '.*' \\
  -exec cp -a {{}} {KNOWN_GOOD}.new/gpufleet/ \\;
sync {KNOWN_GOOD}.new/systemd/* {KNOWN_GOOD}.new/gpufleet/* 2>/dev/null || true
[ -d {KNOWN_GOOD} ] && mv {KNOWN_GOOD} {KNOWN_GOOD}.old
mv {KNOWN_GOOD}.new {KNOWN_GOOD} && rm -rf {KNOWN_GOOD}.old && sync {STATE_DIR}"""
# Put back every file that differs from the known-good set, each atomically (copy to a temp
# name beside it, fsync, rename), and remove gpufleet files the set does not have. Prints one
# RESTORED/REMOVED line per file it touched; the caller restarts only the owners of those.
RESTORE = f"""set -e
put() {{ tmp="$(dirname "$2")/.$(basename "$2").gpufleet-new"; cp -a "$1" "$tmp"; sync "$tmp";
        mv -f "$tmp" "$2"; echo "RESTORED $2"; }}
for pair in "{KNOWN_GOOD}/systemd {UNIT_DIR}" "{KNOWN_GOOD}/gpufleet {CONFIG_DIR}"; do
  set -- $pair
  for f in "$1"/* "$1"/.[!.]*; do
    [ -f "$f" ] || continue
    cmp -s "$f" "$2/$(basename "$f")" || put "$f" "$2/$(basename "$f")"
  done
done
for f in {UNIT_DIR}/{UNIT_GLOB} {UNIT_DIR}/{TARGET}; do
  [ -f "$f" ] && [ ! -f "{KNOWN_GOOD}/systemd/$(basename "$f")" ] && rm -f "$f" && echo "REMOVED $f"
done
for f in $(find {CONFIG_DIR} -maxdepth 1 -type f ! -name '.*' 2>/dev/null); do
  [ -f "{KNOWN_GOOD}/gpufleet/$(basename "$f")" ] || {{ rm -f "$f"; echo "REMOVED $f"; }}
done
sync {UNIT_DIR} {CONFIG_DIR}"""


@dataclass(frozen=True)
class Restored:
    """What RESTORE touched, by service: restart these (in start order), retire those."""

    restart: list[str]
    removed: list[str]
    units_changed: bool  # a unit file was put back or removed: systemd must reload


def restored(output: str, services: list[str]) -> Restored:
    """RESTORE's RESTORED/REMOVED lines -> services to restart (the host's start order, then
    services no longer planned), services whose unit went away, whether a unit changed."""
    touched: set[str] = set()
    removed: set[str] = set()
    units = False
    for line in output.splitlines():
        verb, _, path = line.partition(" ")
        if verb not in ("RESTORED", "REMOVED"):
            continue
        units = units or path.startswith(f"{UNIT_DIR}/")
        owner = owner_of(path, services) or service_of(path)
        if owner:
            gone = verb == "REMOVED" and path.startswith(UNIT_DIR)
            (removed if gone else touched).add(owner)
    order = [n for n in services if n in touched - removed]
    order += sorted(touched - removed - set(services))
    return Restored(order, sorted(removed), units)


def restore(session: Session, services: list[str]) -> list[str]:
    """Put the known-good files back (atomically, only those that differ), reload systemd if a
    unit changed, and restart exactly the services whose files were put back. Returns them."""
    out = session.run(RESTORE, timeout=120)
    done = restored(out.stdout, services)
    for name in done.removed:
        session.run(f"systemctl stop {unit_name(name)}; systemctl disable {unit_name(name)}",
                    timeout=120)
    if done.units_changed:
        session.run("systemctl daemon-reload", timeout=120)
    for name in done.restart:  # in start order, each waits for the one before on its GPU
        session.run(f"test -f {unit_path(name)} && systemctl restart {unit_name(name)}",
                    timeout=2000)
    return done.restart
