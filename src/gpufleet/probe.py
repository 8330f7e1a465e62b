"""Health probes run ON the host (over SSH), so service ports need not be open to the controller
and API keys never leave the host: the probe reads each service's 0600 env file itself.

A probe is healthy when `/health` answers 200 and, unless only health is asked for, `/v1/models`
lists the served model and one real minimal request of the service's kind succeeds (one
completion token, one embedding, one rerank, one transcription of a short silent WAV).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gpufleet.inventory import Kind
from gpufleet.plan import PlannedService

# Runs with the host's python3 (stdlib only); reads the service list as JSON on stdin.
PROBE_SCRIPT = r'''
import io, json, os, struct, sys, urllib.request, uuid, wave

def env_key(path):
    try:
        for line in open(path):
            k, _, v = line.strip().partition("=")
            if k == "VLLM_API_KEY":
                return v.strip().strip('"')
    except OSError:
        pass
    return None

def call(svc, path, body=None, ctype="application/json", timeout=30):
    url = "http://127.0.0.1:%d%s" % (svc["port"], path)
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", ctype)
    key = env_key(svc["env_file"])
    if key:
        req.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()

def silent_wav():
    buf = io.BytesIO()
    w = wave.open(buf, "wb"); w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
    w.writeframes(b"\0\0" * 8000); w.close()
    return buf.getvalue()

def multipart(fields, filename, data):
    b = uuid.uuid4().hex
    parts = [("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (b, k, v)).encode()
             for k, v in fields.items()]
    parts.append(("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                  "Content-Type: audio/wav\r\n\r\n" % (b, filename)).encode() + data + b"\r\n")
    parts.append(("--%s--\r\n" % b).encode())
    return b"".join(parts), "multipart/form-data; boundary=" + b

def request_of_kind(svc):
    m, kind = svc["model"], svc["kind"]
    if kind == "llm":
        return call(svc, "/v1/completions", json.dumps({"model": m, "prompt": "Hi", "max_tokens": 1}).encode())
    if kind == "embed":
        return call(svc, "/v1/embeddings", json.dumps({"model": m, "input": "hi"}).encode())
    if kind == "rerank":
        return call(svc, "/rerank", json.dumps({"model": m, "query": "a", "documents": ["b"]}).encode())
    if kind == "whisper":
        body, ctype = multipart({"model": m}, "probe.wav", silent_wav())
        return call(svc, "/v1/audio/transcriptions", body, ctype)
    return None

def probe(svc, full):
    try:
        status, _ = call(svc, svc["health_path"], timeout=5)
        if status != 200:
            return False, "%s answered %d" % (svc["health_path"], status)
        if not full or svc["kind"] in ("docling", "custom"):
            return True, "health ok"
        status, body = call(svc, "/v1/models", timeout=10)
        ids = [d.get("id") for d in json.loads(body).get("data", [])]
        if svc["model"] not in ids:
            return False, "/v1/models lists %s, not %s" % (ids, svc["model"])
        status, body = request_of_kind(svc)
        return True, "health, /v1/models and a %s request ok" % svc["kind"]
    except Exception as exc:
        detail = str(exc)
        if hasattr(exc, "read"):
            try:
                detail += ": " + exc.read().decode(errors="replace")[:300]
            except Exception:
                pass
        return False, detail

req = json.load(sys.stdin)
out = {}
for svc in req["services"]:
    ok, detail = probe(svc, req["full"])
    out[svc["name"]] = {"ok": ok, "detail": detail}
print(json.dumps(out))
'''


@dataclass(frozen=True)
class Probe:
    service: str
    ok: bool
    detail: str


def probe_request(services: list[PlannedService], full: bool) -> str:
    """The JSON the probe script reads on stdin."""
    return json.dumps({
        "full": full,
        "services": [{
            "name": s.name, "kind": s.service.kind.value, "port": s.service.port,
            "model": s.service.model or s.name, "health_path": s.service.health_path,
            "env_file": f"/etc/gpufleet/{s.name}.env",
        } for s in services],
    })


def parse_probe_output(text: str, services: list[PlannedService]) -> dict[str, Probe]:
    """Probe results by service; a service the script did not report is unhealthy."""
    try:
        data = json.loads(text.strip().splitlines()[-1]) if text.strip() else {}
    except (json.JSONDecodeError, IndexError):
        data = {}
    return {
        s.name: Probe(s.name, bool(data.get(s.name, {}).get("ok")),
                      str(data.get(s.name, {}).get("detail", "no probe result")))
        for s in services
    }


def needs_request(kind: Kind) -> bool:
    return kind.runs_vllm
