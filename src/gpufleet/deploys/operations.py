"""gpufleet's own pyinfra operations: state nouns that yield nothing when the host is right."""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File, Sha1File
from pyinfra.operations import apt, files

from gpufleet.facts import (
    AptCandidate,
    ContainerImages,
    RocmSmiGpuCount,
    VenvDistVersion,
    normalize_image,
)

UPLOAD_DIR = "/etc/gpufleet/.upload"  # root-only: secrets never sit world-readable in /tmp


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
def secret_file(dest: str, content: str, mode: str = "600", user: str = "root",
                group: str = "root"):
    """
    Upload a file whose content must never be shown: compared by hash, never diffed or logged.

    + dest: remote path
    + content: the file's text
    """
    if host.get_fact(Sha1File, path=dest) == hashlib.sha1(content.encode()).hexdigest():
        yield from files.file._inner(path=dest, mode=mode, user=user, group=group)
        return
    yield from files.directory._inner(path=UPLOAD_DIR, mode="700", user="root", group="root")
    parent = dest.rsplit("/", 1)[0] or "/"
    yield from files.directory._inner(path=parent)
    temp = host.get_temp_filename(dest, temp_directory=UPLOAD_DIR)
    yield FileUploadCommand(StringIO(content), dest, remote_temp_filename=temp)
    yield StringCommand("chown", f"{user}:{group}", dest)
    yield StringCommand("chmod", mode, dest)


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
