"""gpufleet's own pyinfra operations: state nouns that yield nothing when the host is right."""

from __future__ import annotations

import hashlib
import shlex
from io import BytesIO

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.operations import apt

from gpufleet.facts import (
    AptCandidate,
    ContainerImages,
    FileStates,
    RocmSmiGpuCount,
    UnitStates,
    VenvDistVersion,
    host_state_fact,
    mode_text,
    normalize_image,
)


def warn(message: str) -> None:
    """A skip or a tolerated failure the operator must see (pyinfra prints warnings always)."""
    logger.warning(f"{host.print_prefix}{message}")


@operation()
def debs(packages: list[str]):
    """
    Ensure Debian packages are installed; refresh the apt lists only when one is missing.

    + packages: names, optionally ``name=version``
    """
    installed = host.get_fact(DebPackages)
    missing = [p for p in packages if p.split("=", 1)[0] not in installed]
    if not missing:
        host.noop(f"packages {', '.join(packages)} are installed")
        return
    yield from apt.update._inner()
    yield from apt.packages._inner(packages=missing)


@operation()
def venv_requirement(venv: str, requirement: str, index_args: str = ""):
    """
    Ensure one requirement (``name`` or ``name==version``) is installed in a venv.

    + venv: the virtualenv's directory
    + requirement: what pip installs; ``==`` pins compare with the installed version exactly
    + index_args: ``--index-url …`` and friends
    """
    name, _, version = requirement.partition("==")
    installed = host.get_fact(VenvDistVersion, python=f"{venv}/bin/python", dist=name.strip())
    if installed is not None and (not version or installed == version.strip()):
        host.noop(f"{requirement} is installed in {venv}")
        return
    yield f"{shlex.quote(venv)}/bin/pip install --quiet {index_args} {shlex.quote(requirement)}"


@operation()
def kernel_headers(kernel: str):
    """
    Ensure the headers of the running kernel are installed, so DKMS can build amdgpu.
    Skips with a warning when apt has no such package (containers, custom kernels).

    + kernel: ``uname -r`` of the host
    """
    package = f"linux-headers-{kernel}"
    if package in host.get_fact(DebPackages):
        host.noop(f"{package} is installed")
        return
    if host.get_fact(AptCandidate, package=package) is None:
        warn(f"skipping {package}: apt cannot install it here (a container or a custom kernel)")
        return
    yield from apt.packages._inner(packages=[package])


@operation()
def atomic_file(dest: str, content: str, mode: str = "644", user: str = "root",
                group: str = "root", batch: tuple[str, ...] = ()):
    """
    Ensure a file holds exactly `content` with this mode and owner, written atomically.

    The bytes go to a temporary name in the same directory that already has its final owner
    and mode (created under umask 077, so a 0600 file is never readable by others), are checked
    by SHA-256, fsynced, then renamed over `dest` and the directory fsynced: whatever fails —
    a full disk, a cut connection, a reboot, a killed controller — `dest` holds the old bytes or
    the new ones, never a mix. Never diffed or logged, so it serves secrets too.

    + dest: absolute path on the host
    + content: the file's text
    + batch: every path the deploy manages on this host, read in one command (FileStates)
    """
    want = (mode_text(mode), user, group, hashlib.sha256(content.encode()).hexdigest())
    have = host_state_fact(host, FileStates, paths=tuple(batch) or (dest,)).get(dest)
    if have == want:
        host.noop(f"{dest} is up to date")
        return
    if have is not None and have[3] == want[3]:  # same bytes: fix owner and mode in place
        yield StringCommand("chown", f"{user}:{group}", dest)
        yield StringCommand("chmod", mode, dest)
        return
    temp = temp_name(dest)
    data = content.encode()
    yield prepare_temp(dest, temp, len(data), mode, user, group)
    upload = _sudo_upload_name(dest)
    if upload is not None:
        folder = upload.rpartition("/")[0]
        yield f"install -d -m 700 -o {shlex.quote(host.data.get('ssh_user'))} {folder}"
    yield FileUploadCommand(BytesIO(data), temp, remote_temp_filename=upload)
    yield commit_temp(dest, temp, want[3])


def temp_name(dest: str) -> str:
    """The temporary name beside `dest` (same directory, so the rename is atomic)."""
    folder, _, name = dest.rpartition("/")
    return f"{folder}/.{name}.gpufleet-new"


def prepare_temp(dest: str, temp: str, size: int, mode: str, user: str, group: str) -> str:
    """Shell: the directory, enough free space in it, and an empty temp file with its final
    owner and mode before any byte is written."""
    folder = dest.rpartition("/")[0] or "/"
    need_kib = size // 1024 + 8  # the file plus a few blocks of slack
    q = shlex.quote
    return (
        f"set -e; mkdir -p {q(folder)}; "
        f"free=$(df -Pk {q(folder)} | awk 'NR==2 {{print $4}}'); "
        f'if [ "$free" -lt {need_kib} ]; then echo "no space left on {folder} (needs '
        f'{need_kib} KiB, $free KiB free)" >&2; exit 1; fi; '
        f"rm -f {q(temp)}; (umask 077 && : > {q(temp)}); "
        f"chown {q(user)}:{q(group)} {q(temp)}; chmod {q(mode)} {q(temp)}"
    )


def commit_temp(dest: str, temp: str, digest: str) -> str:
    """Shell: the temp file's bytes are the planned ones -> fsync, rename, fsync the folder."""
    folder = dest.rpartition("/")[0] or "/"
    q = shlex.quote
    return (
        f"set -e; got=$(sha256sum {q(temp)} | cut -d' ' -f1); "
        f'if [ "$got" != {digest} ]; then rm -f {q(temp)}; echo "the upload of {dest} is '
        f'incomplete (no space left on {folder}?); {dest} is unchanged" >&2; exit 1; fi; '
        f"sync {q(temp)}; mv -f {q(temp)} {q(dest)}; sync {q(folder)}"
    )


def _sudo_upload_name(dest: str) -> str | None:
    """With sudo, pyinfra uploads as the SSH user first, then copies into our temp file (which
    keeps its 0600 mode): that first copy goes to a private 0700 folder of the SSH user."""
    if not host.data.get("_sudo"):
        return None
    user = host.data.get("ssh_user") or "gpufleet"
    return f"/tmp/.gpufleet-upload-{user}/{hashlib.sha1(dest.encode()).hexdigest()}"


@operation()
def secret_file(dest: str, content: str, mode: str = "600", user: str = "root",
                group: str = "root", batch: tuple[str, ...] = ()):
    """
    Upload a file whose content must never be shown: compared by hash, never diffed or logged,
    written atomically and 0600 from its first byte (see atomic_file).

    + dest: remote path
    + content: the file's text
    """
    yield from atomic_file._inner(dest=dest, content=content, mode=mode, user=user, group=group,
                                  batch=batch)


@operation()
def keyring(src: str, dest: str):
    """
    Ensure an apt signing key is present, dearmored, written atomically (0644).

    + src: URL of the armored key
    + dest: the keyring file
    """
    have = host.get_fact(FileStates, paths=(dest,)).get(dest)
    if have is not None and have[0] == "644":
        host.noop(f"keyring {dest} is present")
        return
    temp, q = temp_name(dest), shlex.quote
    folder = dest.rpartition("/")[0]
    yield (f"set -e; mkdir -p {q(folder)}; rm -f {q(temp)}; "
           f"curl -fsSL {q(src)} | gpg --batch --dearmor -o {q(temp)}; chmod 644 {q(temp)}; "
           f"sync {q(temp)}; mv -f {q(temp)} {q(dest)}; sync {q(folder)}")


@operation()
def unit_running(unit: str, batch: tuple[str, ...] = ()):
    """
    Ensure a systemd unit is enabled and active. Reads ActiveState, which (unlike pyinfra's
    SubState-based status) is "active" for a target too, so a converged host needs nothing.

    + unit: the unit's full name
    + batch: every unit the deploy manages, read in one `systemctl show` (UnitStates)
    """
    state = host_state_fact(host, UnitStates, units=tuple(batch) or (unit,)).get(unit, {})
    if state.get("UnitFileState") != "enabled":
        yield StringCommand("systemctl", "enable", unit)
    if state.get("ActiveState") not in ("active", "activating", "reloading"):
        yield StringCommand("systemctl", "start", unit)
    else:
        host.noop(f"{unit} is {state.get('ActiveState')}")


@operation()
def gpus_visible(expected: int):
    """
    Ensure rocm-smi lists at least `expected` GPUs; fails the host with the count otherwise.

    + expected: the inventory's gpu_count for the host
    """
    seen = host.get_fact(RocmSmiGpuCount)
    if seen >= expected:
        host.noop(f"rocm-smi lists {seen} GPUs")
        return
    message = (f"rocm-smi lists {seen} of {expected} GPUs: check `dmesg | grep amdgpu`, "
               "`dkms status` and the inventory's gpu_count")
    yield f"echo {shlex.quote(message)} >&2; exit 1"


@operation()
def container_image(engine: str, image: str):
    """
    Ensure a container image is present (pulled once; a pinned tag never changes).

    + engine: docker or podman
    + image: reference as in the inventory
    """
    if normalize_image(image) in host.get_fact(ContainerImages, engine=engine):
        host.noop(f"image {image} is present")
        return
    yield StringCommand(engine, "pull", image)


@operation()
def model_snapshot(python: str, script: str, model: str, revision: str | None, cache_dir: str,
                   marker: str, token_file: str | None = None, owner: str | None = None):
    """
    Ensure a model snapshot is complete in the cache; resumes a partial download.

    + marker: written by the script only after a verified download; its presence means done
    + token_file: root-only file holding the hub token (the token is never on a command line)
    """
    if host.get_fact(File, path=marker):
        host.noop(f"{model}@{revision or 'main'} is complete")
        return
    args = [python, script, "--model", model, "--revision", revision or "main",
            "--cache-dir", cache_dir, "--marker", marker]
    if token_file:
        args += ["--token-file", token_file]
    if owner:
        args += ["--owner", owner]
    yield StringCommand(*(shlex.quote(a) for a in args))
