"""Where vLLM runs: a container engine with the pinned images, or a pinned vLLM venv."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files, pip, systemd

from gpufleet.deploys import operations as ops
from gpufleet.deploys.account import service_user
from gpufleet.deploys.settings import defaults, setting
from gpufleet.deploys.target import HostTarget
from gpufleet.deploys.wanted import vllm_words
from gpufleet.inventory import Kind


@deploy("Runtime", data_defaults=defaults())
def runtime(target: HostTarget) -> None:
    service_user()
    user = setting("gpufleet_service_user")
    files.directory(name="Ensure the model cache exists and belongs to the service user.",
                    path=target.fleet.model_cache, user=user, group=user, mode="755")
    if target.fleet.runtime == "container":
        containers(target)
    else:
        vllm_venv(target)


def images(target: HostTarget) -> list[str]:
    """Images the host's services run: the fleet's vLLM image and any per-service image."""
    wanted: list[str] = []
    for planned in target.services:
        svc = planned.service
        image = svc.image or (target.fleet.image if svc.kind.runs_vllm else None)
        if image is None and svc.kind.runs_vllm:
            raise DeployError(f"{target.name}: service {svc.name} runs vLLM in a container but "
                              "fleet.image is not set")
        if image and image not in wanted:
            wanted.append(image)
    return wanted


def containers(target: HostTarget) -> None:
    engine = target.fleet.container_engine
    ops.debs(name=f"Ensure the {engine} container engine is installed.",
             packages=setting("gpufleet_container_packages")[engine])
    if engine == "docker":
        systemd.service(name="Ensure the Docker daemon is enabled and running.",
                        service="docker.service", running=True, enabled=True)
    for image in host.loop(images(target)):
        ops.container_image(name=f"Ensure the image {image} is present.", engine=engine,
                            image=image)


def pip_index_args(extra: tuple[str, ...] = ()) -> str:
    args = [f"--index-url {setting('gpufleet_pip_index_url')}"]
    urls = [*setting("gpufleet_pip_extra_index_urls"), *extra]
    args += [f"--extra-index-url {url}" for url in urls]
    args += [f"--trusted-host {h}" for h in setting("gpufleet_pip_trusted_hosts")]
    return " ".join(args)


def python_venv(path: str, requirement: str, what: str, extra: tuple[str, ...] = ()) -> None:
    """A venv at `path` with one pinned requirement, installed from the configured index."""
    ops.debs(name="Ensure Python's venv module is installed.", packages=["python3-venv"])
    pip.venv(name=f"Ensure the {what} virtualenv exists.", path=path, python="python3")
    ops.venv_requirement(name=f"Ensure {requirement} is installed in the {what} virtualenv.",
                         venv=path, requirement=requirement, index_args=pip_index_args(extra))


def vllm_venv(target: HostTarget) -> None:
    words = vllm_words(target.fleet.vllm_version)
    if "{rocm_variant}" in setting("gpufleet_vllm_requirement") and not words["rocm_variant"]:
        raise DeployError(f"{target.name}: vLLM {words['version']} publishes no ROCm wheel (the "
                          "plan says so: venv_without_rocm_wheel); use runtime: container")
    requirement = setting("gpufleet_vllm_requirement").format(**words)
    extra = tuple(url.format(**words) for url in setting("gpufleet_vllm_extra_index_urls"))
    python_venv(setting("gpufleet_venv_dir"), requirement, "vLLM", extra)
    if any(p.service.kind is Kind.DOCLING for p in target.services):
        python_venv(setting("gpufleet_docling_venv_dir"),
                    setting("gpufleet_docling_requirement"), "docling-serve")
