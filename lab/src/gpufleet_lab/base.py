"""The cached, read-only base rootfs every lab host boots from (behind a per-host overlay)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpufleet_lab.config import LabConfig
from gpufleet_lab.sh import LabError, log, run, write

# Bump when the post-debootstrap steps change, so cached bases are rebuilt.
RECIPE_VERSION = 1
MARKER = ".gpufleet-base.json"

# Units that fail or only add noise in a container without hardware (shared/facts/testhosts.md).
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "systemd-pstore.service",
    "e2scrub_reap.service",
    "getty@tty1.service",
)

# Only an ed25519 host key: each host gets a fresh one, and known_hosts lists exactly it.
SSHD_DROPIN = """\
# gpufleet lab: one host key (written per host before boot), keys only
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
"""


def base_key(cfg: LabConfig) -> str:
    spec = {
        "suite": cfg.suite,
        "mirror": cfg.debian_mirror,
        "packages": list(cfg.packages),
        "recipe": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def base_dir(cfg: LabConfig) -> Path:
    return cfg.cache_dir / f"base-{cfg.suite}-{base_key(cfg)}"


def is_valid(path: Path) -> bool:
    return (path / MARKER).is_file()


def bases_in_use() -> set[Path]:
    """Base dirs that some live overlay (of any lab) uses as its lower dir."""
    used: set[Path] = set()
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[2] == "overlay":
            for opt in parts[3].split(","):
                if opt.startswith("lowerdir="):
                    used.update(Path(p) for p in opt[len("lowerdir=") :].split(":"))
    return used


@contextmanager
def cache_lock(cfg: LabConfig) -> Iterator[None]:
    """Serialise cache writers between processes (parallel test runs share the cache): base
    builds, the mirror's GPG key and debs, and signing (which shares one gpg-agent)."""
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.cache_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_base(cfg: LabConfig, *, force: bool = False) -> Path:
    """Return the base for cfg's package set, building it (atomically) when missing or forced."""
    target = base_dir(cfg)
    with cache_lock(cfg):
        if is_valid(target) and not force:
            return target
        if target.exists() and target in bases_in_use():
            raise LabError(f"refusing to rebuild {target}: live lab hosts use it (lab down first)")
        _remove_stale_builds(cfg)
        tmp = target.with_name(target.name + ".tmp")
        t0 = time.monotonic()
        _debootstrap(cfg, tmp)
        _customise(cfg, tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a crash before this leaves only a *.tmp dir, never a base
        log.info("built base %s in %.0f s", target, time.monotonic() - t0)
        _prune_unused_bases(cfg, keep=target)
    return target


def _remove_stale_builds(cfg: LabConfig) -> None:
    # Under the lock no other build is running, so any *.tmp dir is a crashed build.
    for stale in cfg.cache_dir.glob("base-*.tmp"):
        log.info("removing half-built base %s", stale)
        _unmount_below(stale)
        shutil.rmtree(stale, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    # A killed debootstrap can leave its target's /proc, /sys (or /dev binds) mounted; rmtree
    # must never walk into those.
    points = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), key=len, reverse=True):
        run(["umount", "-l", point], check=False)


def _prune_unused_bases(cfg: LabConfig, keep: Path) -> None:
    # An hour's grace: another lab may have just built its base and not mounted it yet.
    used = bases_in_use()
    for old in cfg.cache_dir.glob("base-*"):
        marker = old / MARKER
        if old == keep or old in used or not marker.is_file():
            continue
        if time.time() - marker.stat().st_mtime > 3600:
            log.info("removing unused base %s", old)
            shutil.rmtree(old, ignore_errors=True)


def _debootstrap(cfg: LabConfig, root: Path) -> None:
    log.info("debootstrap %s (%s) into %s, about a minute", cfg.suite, ",".join(cfg.packages), root)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(cfg.packages)}",
            cfg.suite,
            root,
            cfg.debian_mirror,
        ],
        timeout=1200,
    )


def _customise(cfg: LabConfig, root: Path) -> None:
    run(["chroot", root, "systemctl", "mask", "--quiet", *MASKED_UNITS])
    # Clones must not share identity: machine-id and host keys are made per host before boot.
    write(root / "etc/machine-id", "")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    write(root / "etc/ssh/sshd_config.d/gpufleet-lab.conf", SSHD_DROPIN)
    run(["chroot", root, "useradd", "-m", "-s", "/bin/bash", "deploy"])
    write(root / "etc/sudoers.d/deploy", "deploy ALL=(ALL) NOPASSWD:ALL\n", mode=0o440)
    # Hosts have no route out: Debian sources would only make `apt-get update` fail. Packages
    # come from the base or from the lab's own mirror.
    write(root / "etc/apt/sources.list", "# gpufleet lab: no outside network\n")
    for leftover in (root / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()
    for lst in (root / "var/lib/apt/lists").glob("*_*"):
        lst.unlink()
    spec = {
        "suite": cfg.suite,
        "packages": list(cfg.packages),
        "recipe": RECIPE_VERSION,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write(root / MARKER, json.dumps(spec, indent=1) + "\n")


def installed_packages(base: Path) -> set[str]:
    """Package names installed in a base (read from its dpkg status, no chroot needed)."""
    names: set[str] = set()
    name = ""
    for line in (base / "var/lib/dpkg/status").read_text().splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Status: ") and line.endswith(" installed"):
            names.add(name)
    return names
