"""Service probe run on a host by `python3 -c` (stdlib only): see probe.py.

Reads {"full": bool, "services": [...]} on stdin and prints {name: {"ok", "detail"}} as JSON.
The API key is read from the service's own 0600 env file, so it never crosses the network or
appears in a command line.
"""

import io
import json
import sys
import urllib.request
import uuid
import wave


def env_key(path):
    try:
        with open(path) as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                if key == "VLLM_API_KEY":
                    return value.strip().strip('"')
    except OSError:
        pass
    return None


def call(svc, path, body=None, ctype="application/json", timeout=30):
    url = f"http://127.0.0.1:{svc['port']}{path}"
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
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 8000)  # half a second of silence
    return buf.getvalue()


def multipart(fields, filename, data):
    b = uuid.uuid4().hex
    parts = [
        f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    head = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: audio/wav\r\n\r\n")
    parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{b}--\r\n".encode())
    return b"".join(parts), "multipart/form-data; boundary=" + b


def request_of_kind(svc):
    """One real, minimal request of the service's kind."""
    model, kind = svc["model"], svc["kind"]
    if kind == "llm":
        body = {"model": model, "prompt": "Hi", "max_tokens": 1}
        return call(svc, "/v1/completions", json.dumps(body).encode())
    if kind == "embed":
        body = {"model": model, "input": "hi"}
        return call(svc, "/v1/embeddings", json.dumps(body).encode())
    if kind == "rerank":
        body = {"model": model, "query": "a", "documents": ["b"]}
        return call(svc, "/rerank", json.dumps(body).encode())
    if kind == "whisper":
        data, ctype = multipart({"model": model}, "probe.wav", silent_wav())
        return call(svc, "/v1/audio/transcriptions", data, ctype)
    return None


def probe(svc, full):
    try:
        status, _ = call(svc, svc["health_path"], timeout=5)
        if status != 200:
            return False, f"{svc['health_path']} answered {status}"
        if not full or svc["kind"] in ("docling", "custom"):
            return True, "health ok"
        _, body = call(svc, "/v1/models", timeout=10)
        ids = [d.get("id") for d in json.loads(body).get("data", [])]
        if svc["model"] not in ids:
            return False, f"/v1/models lists {ids}, not {svc['model']}"
        request_of_kind(svc)
        return True, f"health, /v1/models and a {svc['kind']} request ok"
    except Exception as exc:  # any failure is the answer: report it, never crash the probe
        detail = str(exc)
        if hasattr(exc, "read"):
            try:
                detail += ": " + exc.read().decode(errors="replace")[:300]
            except Exception:
                pass
        return False, detail


def main():
    req = json.load(sys.stdin)
    out = {}
    for svc in req["services"]:
        ok, detail = probe(svc, req["full"])
        out[svc["name"]] = {"ok": ok, "detail": detail}
    print(json.dumps(out))


main()
