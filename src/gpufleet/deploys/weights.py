"""Model weights: each model at its pinned revision in the shared cache before any unit starts.

The hub token travels in a root-only file (never on a command line, never in a log), a
marker written after a verified download makes the step a no-op afterwards, and an
interrupted download resumes on the next run.
"""

from __future__ import annotations

import re
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from gpufleet.deploys import operations as ops
from gpufleet.deploys.runtime import python_venv
from gpufleet.deploys.settings import defaults, setting
from gpufleet.deploys.target import HostTarget, ModelPull

SCRIPT = Path(__file__).with_name("files") / "fetch_model.py"


@deploy("Weights", data_defaults=defaults())
def weights(target: HostTarget) -> None:
    pulls = target.model_pulls()
    if not setting("gpufleet_weights_download"):
        ops.warn("gpufleet_weights_download is off: not downloading "
                 f"{len(pulls)} model(s); units start from what is in the cache")
        return
    if not pulls:
        return
    state_dir, venv = setting("gpufleet_weights_state_dir"), setting("gpufleet_weights_venv_dir")
    python_venv(venv, setting("gpufleet_weights_requirement"), "model download")
    files.directory(name="Ensure the root-only weights directory exists.", path=state_dir,
                    user="root", group="root", mode="700")
    files.put(name="Ensure the model download helper is present.", src=str(SCRIPT),
              dest=f"{state_dir}/fetch_model.py", mode="600")
    for secret in host.loop(sorted({p.token_secret for p in pulls if p.token_secret})):
        ops.secret_file(name=f"Ensure the {secret} token file is present.",
                        dest=token_path(secret), content=target.tokens.get(secret, ""))
    for pull in host.loop(pulls):
        _snapshot(target, pull, f"{venv}/bin/python", f"{state_dir}/fetch_model.py")


def token_path(secret: str) -> str:
    return f"{setting('gpufleet_weights_state_dir')}/{secret}.token"


def marker_path(cache: str, pull: ModelPull) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]", "--", pull.model)
    return f"{cache}/.gpufleet/{slug}@{pull.revision or 'main'}.complete"


def _snapshot(target: HostTarget, pull: ModelPull, python: str, script: str) -> None:
    # Units set HF_HOME to the model cache, so the hub cache is its hub/ folder.
    cache = f"{target.fleet.model_cache}/hub"
    ops.model_snapshot(
        name=f"Ensure {pull.model}@{pull.revision or 'main'} is downloaded.", python=python,
        script=script, model=pull.model, revision=pull.revision, cache_dir=cache,
        marker=marker_path(target.fleet.model_cache, pull), owner=setting("gpufleet_service_user"),
        token_file=token_path(pull.token_secret) if pull.token_secret else None,
    )
