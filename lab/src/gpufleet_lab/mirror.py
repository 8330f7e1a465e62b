"""The lab's signed apt mirror (shaped like repo.radeon.com) and PyPI index, served on the bridge.

Real Debian .debs (rocm-smi and the dependencies the base lacks) are fetched with
`apt-get download` on the test machine, indexed with apt-ftparchive and signed with a per-machine
lab GPG key, so a rocm deploy runs its real key + repo + pin steps against it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gpufleet_lab import procs
from gpufleet_lab.base import cache_lock, installed_packages
from gpufleet_lab.config import LabConfig
from gpufleet_lab.sh import LabError, log, run, start_detached, write

CODENAME = "jammy"  # Debian 12 uses AMD's Ubuntu jammy repos (shared/facts/rocm.md 1.3)
ORIGIN = "repo.radeon.com"  # so the real pin `Pin: release o=repo.radeon.com` applies
KEY_UID = "gpufleet lab mirror <lab-mirror@gpufleet.invalid>"
SERVER = Path(__file__).with_name("mirror_server.py")
TAG = "gpufleet-lab-mirror"


def key_path(cfg: LabConfig) -> Path:
    """The armored public key (what http://<bridge>:<port>/rocm/rocm.gpg.key serves)."""
    return cfg.cache_dir / "mirror-gpg" / "rocm.gpg.key"


def _gpg(cfg: LabConfig, *args: str | Path) -> subprocess.CompletedProcess[str]:
    home = cfg.cache_dir / "mirror-gpg"
    env = {**os.environ, "GNUPGHOME": str(home)}
    return run(
        ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        env=env,
    )


def ensure_signing_key(cfg: LabConfig) -> None:
    home = cfg.cache_dir / "mirror-gpg"
    if key_path(cfg).is_file():
        return
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    _gpg(cfg, "--quick-gen-key", KEY_UID, "ed25519", "sign", "never")
    armored = _gpg(cfg, "--armor", "--export", KEY_UID).stdout
    write(key_path(cfg), armored)
    _stop_agent(cfg)


def _stop_agent(cfg: LabConfig) -> None:
    # gpg starts a gpg-agent for secret-key use; do not leave it running after the lab.
    env = {**os.environ, "GNUPGHOME": str(cfg.cache_dir / "mirror-gpg")}
    run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)


def fetch_debs(cfg: LabConfig, base: Path) -> Path:
    """Download cfg.mirror_packages plus the deps the base lacks (cached by package set)."""
    key = hashlib.sha256(f"{base.name}:{sorted(cfg.mirror_packages)}".encode()).hexdigest()[:12]
    out = cfg.cache_dir / "debs" / key
    if (out / ".complete").exists():
        return out
    if run(["apt-cache", "show", *cfg.mirror_packages], check=False).returncode != 0:
        log.info("apt lists lack %s; running apt-get update", " ".join(cfg.mirror_packages))
        run(["apt-get", "-o", "DPkg::Lock::Timeout=120", "update", "-qq"], timeout=300)
    deps = run(
        [
            "apt-cache",
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            *cfg.mirror_packages,
        ]
    ).stdout
    names = {ln.strip() for ln in deps.splitlines() if ln and not ln[0].isspace() and "<" not in ln}
    wanted = sorted(names - installed_packages(base) | set(cfg.mirror_packages))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("apt-get download %s", " ".join(wanted))
    if run(["apt-get", "download", "-qq", *wanted], cwd=tmp, timeout=300, check=False).returncode:
        # stale lists name versions the Debian mirror no longer has: refresh once, retry
        run(["apt-get", "-o", "DPkg::Lock::Timeout=120", "update", "-qq"], timeout=300)
        run(["apt-get", "download", "-qq", *wanted], cwd=tmp, timeout=300)
    (tmp / ".complete").write_text("\n".join(wanted) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_repo(cfg: LabConfig, base: Path) -> Path:
    """Lay out and sign the repos under <run_dir>/www; returns that dir."""
    with cache_lock(cfg):
        return _build_repo(cfg, base)


def _build_repo(cfg: LabConfig, base: Path) -> Path:
    ensure_signing_key(cfg)
    debs = fetch_debs(cfg, base)
    www = cfg.run_dir / "www"
    shutil.rmtree(www, ignore_errors=True)
    www.mkdir(parents=True)
    shutil.copy(key_path(cfg), www / "rocm.gpg.key")
    pool = www / "repos/rocm/pool/main"
    pool.mkdir(parents=True)
    for deb in debs.glob("*.deb"):
        shutil.copy(deb, pool)  # a few MB; a copy keeps www independent of the cache
    for repo in ("rocm", "amdgpu", "graphics"):
        _index(cfg, www / "repos" / repo, label=f"lab {repo}")
    _stop_agent(cfg)
    return www


def _index(cfg: LabConfig, repo: Path, label: str) -> None:
    dist = repo / "dists" / CODENAME
    binary = dist / "main/binary-amd64"
    binary.mkdir(parents=True, exist_ok=True)
    (repo / "pool/main").mkdir(parents=True, exist_ok=True)
    # run from the repo root so Filename: fields are relative to it (pool/main/...)
    packages = run(["apt-ftparchive", "packages", "pool"], cwd=repo).stdout
    (binary / "Packages").write_text(packages)
    (binary / "Packages.gz").write_bytes(gzip.compress(packages.encode(), mtime=0))
    opts = {
        "Origin": ORIGIN,
        "Label": label,
        "Suite": CODENAME,
        "Codename": CODENAME,
        "Architectures": "amd64",
        "Components": "main",
    }
    argv = ["apt-ftparchive"]
    for k, v in opts.items():
        argv += ["-o", f"APT::FTPArchive::Release::{k}={v}"]
    release = run([*argv, "release", dist]).stdout
    (dist / "Release").write_text(release)
    _gpg(cfg, "--local-user", KEY_UID, "--clearsign", "-o", dist / "InRelease", dist / "Release")
    _gpg(
        cfg,
        "--local-user",
        KEY_UID,
        "--armor",
        "--detach-sign",
        "-o",
        dist / "Release.gpg",
        dist / "Release",
    )


def start(cfg: LabConfig, www: Path) -> None:
    """Start the package server on the bridge address, detached; wait until it accepts."""
    stop(cfg)
    cfg.wheels_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(SERVER), "--bind", cfg.bridge_ip, "--port", str(cfg.mirror_port)]
    argv += ["--www", str(www), "--wheels", str(cfg.wheels_dir), "--tag", f"{TAG}:{cfg.prefix}"]
    start_detached(argv, cfg.run_dir / "mirror.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((cfg.bridge_ip, cfg.mirror_port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise LabError(f"lab mirror did not start; see {cfg.run_dir / 'mirror.log'}")


def server_pids(cfg: LabConfig) -> list[int]:
    tag = f"{TAG}:{cfg.prefix}"
    return [pid for pid, argv in procs.iter_procs() if tag in argv]


def stop(cfg: LabConfig) -> None:
    pids = server_pids(cfg)
    procs.signal_all(pids, signal.SIGTERM)
    procs.signal_all(procs.wait_gone(pids, 3), signal.SIGKILL)
