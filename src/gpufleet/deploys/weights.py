"""Model weights: each model at its pinned revision in the shared cache before any unit starts.

The hub token travels in a root-only file (never on a command line, never in a log), a
marker written after a verified download makes the step a no-op afterwards, and an
interrupted download resumes on the next run.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from gpufleet.deploys import operations as ops
from gpufleet.deploys import wanted
from gpufleet.deploys.runtime import python_venv
from gpufleet.deploys.settings import defaults, setting, settings_now
from gpufleet.deploys.target import HostTarget, ModelPull
from gpufleet.inventory import marker_file, token_file

SCRIPT = wanted.FETCH_SCRIPT


@deploy("Weights", data_defaults=defaults())
def weights(target: HostTarget) -> None:
    pulls = target.model_pulls()
    want = wanted.weights(target, settings_now())
    for message in want.warnings:
        ops.warn(message)
    if not setting("gpufleet_weights_download") or not pulls:
        return
    state_dir, venv = setting("gpufleet_weights_state_dir"), setting("gpufleet_weights_venv_dir")
    python_venv(venv, setting("gpufleet_weights_requirement"), "model download")
    files.directory(name="Ensure the root-only weights directory exists.", path=state_dir,
                    user="root", group="root", mode="700")
    batch = tuple(f.path for f in want.files)
    for file in host.loop(want.files):
        what = ("the model download helper is present" if not file.secret
                else f"the {file.path.rsplit('/', 1)[-1].removesuffix('.token')} token file is "
                "present")
        operation = ops.secret_file if file.secret else ops.atomic_file
        operation(name=f"Ensure {what}.", dest=file.path, content=file.content, mode=file.mode,
                  batch=batch)
    for pull in host.loop(pulls):
        _snapshot(target, pull, f"{venv}/bin/python", f"{state_dir}/fetch_model.py")


def token_path(secret: str) -> str:
    """`<gpufleet_weights_state_dir>/<secret>.token`: the secret name is a POSIX name (no '/',
    no '.'), checked again here (ValueError) so no raw value becomes a path on the host."""
    return token_file(setting("gpufleet_weights_state_dir"), secret)


def marker_path(cache: str, pull: ModelPull) -> str:
    """The download's completion marker: a slug of the validated model id plus a short hash of
    id and revision (gpufleet.inventory.marker_file), never the raw revision."""
    return marker_file(cache, pull.model, pull.revision)


def _snapshot(target: HostTarget, pull: ModelPull, python: str, script: str) -> None:
    # Units set HF_HOME to the model cache, so the hub cache is its hub/ folder.
    cache = f"{target.fleet.model_cache}/hub"
    ops.model_snapshot(
        name=f"Ensure {pull.model}@{pull.revision or 'main'} is downloaded.", python=python,
        script=script, model=pull.model, revision=pull.revision, cache_dir=cache,
        marker=marker_path(target.fleet.model_cache, pull), owner=setting("gpufleet_service_user"),
        token_file=token_path(pull.token_secret) if pull.token_secret else None,
    )
