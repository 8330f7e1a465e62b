"""What one host must become: its part of the plan, its rendered files, its download tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpufleet.inventory import Fleet
from gpufleet.plan import PlannedHost, PlannedService
from gpufleet.render import RenderedFile


@dataclass(frozen=True)
class ModelPull:
    """One model snapshot to pre-download; `token_secret` names the fleet secret, if any."""

    model: str
    revision: str | None
    token_secret: str | None


@dataclass(frozen=True)
class HostTarget:
    """Everything the deploys need for one host; secrets are kept out of repr()."""

    name: str
    fleet: Fleet
    planned: PlannedHost
    files: tuple[RenderedFile, ...]
    tokens: dict[str, str] = field(default_factory=dict, repr=False)
    # Every knob's value for the host, from the resolver that rendered `files`
    # (gpufleet.settings.resolve): the deploys' pyinfra host data is exactly this.
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def services(self) -> list[PlannedService]:
        return self.planned.services

    def model_pulls(self) -> list[ModelPull]:
        """Unique (model, revision) pairs of the host's vLLM services, in start order."""
        pulls: dict[tuple[str, str | None], ModelPull] = {}
        for planned in self.services:
            svc = planned.service
            if svc.kind.runs_vllm and svc.model and (svc.model, svc.revision) not in pulls:
                secret = svc.secrets.get("HF_TOKEN")
                pulls[(svc.model, svc.revision)] = ModelPull(svc.model, svc.revision, secret)
        return list(pulls.values())
