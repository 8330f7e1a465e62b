"""Health probes run ON the host (over SSH), so service ports need not be open to the controller
and API keys never leave the host: the probe reads each service's 0600 env file itself.

A probe is healthy when `/health` answers 200 and, unless only health is asked for, `/v1/models`
lists the served model and one real minimal request of the service's kind succeeds (one
completion token, one embedding, one rerank, one transcription of a short silent WAV).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gpufleet.host.layout import env_file_path
from gpufleet.inventory import Kind
from gpufleet.plan import PlannedService

# Runs with the host's python3 (stdlib only); reads the service list as JSON on stdin.
PROBE_SCRIPT = (Path(__file__).parent / "host" / "scripts" / "probe.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Probe:
    service: str
    ok: bool
    detail: str


def probe_request(services: list[PlannedService], full: bool) -> str:
    """The JSON the probe script reads on stdin."""
    return json.dumps(
        {
            "full": full,
            "services": [
                {
                    "name": s.name,
                    "kind": s.service.kind.value,
                    "port": s.service.port,
                    "model": s.service.model or s.name,
                    "health_path": s.service.health_path,
                    "env_file": env_file_path(s.name),
                }
                for s in services
            ],
        }
    )


def parse_probe_output(text: str, services: list[PlannedService]) -> dict[str, Probe]:
    """Probe results by service; a service the script did not report is unhealthy."""
    try:
        data = json.loads(text.strip().splitlines()[-1]) if text.strip() else {}
    except (json.JSONDecodeError, IndexError):
        data = {}
    return {
        s.name: Probe(
            s.name,
            bool(data.get(s.name, {}).get("ok")),
            str(data.get(s.name, {}).get("detail", "no probe result")),
        )
        for s in services
    }


def needs_request(kind: Kind) -> bool:
    return kind.runs_vllm
