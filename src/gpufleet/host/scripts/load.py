"""Bounded load on a host's own services, run by `python3 -c` (stdlib only): see loadcheck.py.

Reads on stdin {"duration_s", "grace_s", "max_requests", "sample_interval_s", "smi": [{"tool",
"commands"}], "services": [{"name", "kind", "url", "model", "env_file", "max_model_len",
"max_tokens", "concurrency"}]} and prints one JSON line: {"elapsed_s", "smi_tool", "samples":
[{"t", "last_t", "count", "outputs"}], "services": {name: {"requests", "ok", "errors",
"first_errors", "unfinished", "p50_ms", "p95_ms", "p99_ms", "max_ms", "longest_input"}}}.

Bounds that hold even when a server hangs: no request starts after `duration_s`, no service
sends more than `max_requests`, and the script prints and exits `duration_s + grace_s` after
the load began whatever is still in flight (counted as unfinished); before it, the reading at
rest takes at most a quarter of the duration (a hung SMI run is killed). Only this host's own
addresses are loaded: a URL whose address is not local to this host is refused. The API key is
read from the service's own 0600 env file, so it is never in a command line, on the network
between hosts, or in the output. GPU memory is sampled by running the accelerator's SMI
commands; identical consecutive readings are kept once (with a count), so the output stays
small.
"""

import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import wave

# Words that are one token in every common tokenizer (BPE and SentencePiece alike), so a prompt
# of N words stays near N tokens with a real model and exactly N with the lab's double.
WORDS = ("the", "of", "and", "to", "in", "is", "it", "that", "for", "on", "was", "with", "as",
         "at", "by", "be", "this", "are", "or", "an")
FILL = 0.8  # longest input: this share of the context (a real tokenizer adds a few tokens)
SHARES = (0.02, 0.1, 0.25, 0.5, 1.0)  # input lengths cycle through these shares of the longest
AUDIO_SECONDS = (1, 3, 6)
MAX_SAMPLES = 600
MAX_ERRORS_KEPT = 3


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


def is_local(url):
    """True when the URL's address is loopback or one of this host's own addresses."""
    host = urllib.parse.urlsplit(url).hostname or ""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))  # only an address of this host can be bound
        return True
    except OSError:
        return False


def words(n):
    return " ".join(WORDS[i % len(WORDS)] for i in range(max(1, n)))


def tone_wav(seconds):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        frames = bytearray()
        for i in range(16000 * seconds):
            value = int(3000 * math.sin(2 * math.pi * 440 * i / 16000))
            frames += value.to_bytes(2, "little", signed=True)
        w.writeframes(bytes(frames))
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


def longest_input(svc):
    """Words in the longest input: FILL of the context, less the completion for an LLM."""
    room = svc["max_model_len"] - (svc["max_tokens"] if svc["kind"] == "llm" else 0)
    return max(1, int(room * FILL))


def request_for(svc, i, audio):
    """The i-th request of a service: (path, body, content type, input length)."""
    model, kind, top = svc["model"], svc["kind"], longest_input(svc)
    n = max(1, int(top * SHARES[i % len(SHARES)]))
    if kind == "llm":
        body = {"model": model, "prompt": words(n), "max_tokens": svc["max_tokens"],
                "ignore_eos": True}
        return "/v1/completions", json.dumps(body).encode(), "application/json", n
    if kind == "embed":
        body = {"model": model, "input": words(n)}
        return "/v1/embeddings", json.dumps(body).encode(), "application/json", n
    if kind == "rerank":  # each query+document pair must fit the context
        query = max(1, n // 10)
        body = {"model": model, "query": words(query), "documents": [words(n - query)] * 4}
        return "/rerank", json.dumps(body).encode(), "application/json", n
    if kind == "whisper":
        seconds = AUDIO_SECONDS[i % len(AUDIO_SECONDS)]
        data, ctype = multipart({"model": model}, "load.wav", audio[seconds])
        return "/v1/audio/transcriptions", data, ctype, seconds
    raise ValueError(f"no load is defined for kind {kind}")


class ServiceLoad:
    """One service's workers and what they measured."""

    def __init__(self, svc, key, job, audio):
        self.svc, self.key, self.job, self.audio = svc, key, job, audio
        self.lock = threading.Lock()
        self.sent = self.ok = self.failed = self.running = 0
        self.latencies = []
        self.errors = []
        self.longest = 0

    def next_index(self):
        with self.lock:
            if self.sent >= self.job["max_requests"] or time.monotonic() >= self.job["deadline"]:
                return None
            self.sent += 1
            self.running += 1
            return self.sent - 1

    def one(self, i):
        path, body, ctype, length = request_for(self.svc, i, self.audio)
        req = urllib.request.Request(self.svc["url"] + path, data=body, method="POST")
        req.add_header("Content-Type", ctype)
        if self.key:
            req.add_header("Authorization", "Bearer " + self.key)
        left = self.job["hard_deadline"] - time.monotonic()
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=max(0.1, left)) as resp:
                resp.read()
            self.done(started, length, None)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            self.done(started, length, f"HTTP {exc.code}: {detail}")
        except Exception as exc:  # any failure is a measurement: count it, never crash
            self.done(started, length, f"{type(exc).__name__}: {exc}"[:200])

    def done(self, started, length, error):
        with self.lock:
            self.running -= 1
            self.longest = max(self.longest, length)
            if error is None:
                self.ok += 1
                self.latencies.append(time.monotonic() - started)
                return
            self.failed += 1
            if error not in self.errors and len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(error)

    def worker(self):
        self.job["go"].wait()
        while not self.job["stop"].is_set():
            i = self.next_index()
            if i is None:
                return
            self.one(i)

    def result(self):
        with self.lock:
            ordered = sorted(self.latencies)
            unfinished = self.running
            errors = list(self.errors)
            if unfinished:
                errors.append(f"{unfinished} request(s) still running at the deadline "
                              f"(duration + {self.job['grace_s']:g} s): abandoned")
            return {
                "requests": self.ok + self.failed + unfinished, "ok": self.ok,
                "errors": self.failed + unfinished, "first_errors": errors,
                "unfinished": unfinished, "p50_ms": percentile(ordered, 50),
                "p95_ms": percentile(ordered, 95), "p99_ms": percentile(ordered, 99),
                "max_ms": percentile(ordered, 100), "longest_input": self.longest,
            }


def percentile(ordered, p):
    """Nearest-rank percentile of sorted seconds, in ms; None without any."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return round(ordered[rank - 1] * 1000, 1)


class Sampler:
    """Runs the SMI commands every interval until stopped; keeps distinct readings."""

    def __init__(self, job, smi, t0):
        self.job, self.t0 = job, t0
        self.tool, self.commands = pick_smi(smi)
        self.samples = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self):
        if self.commands is None:
            return
        # a hung SMI tool may take at most a quarter of the duration from the load
        limit = min(10.0, self.job["duration_s"] / 4 + 0.5)
        outputs = [run_smi(c, self.job["hard_deadline"], limit) for c in self.commands]
        now = round(time.monotonic() - self.t0, 2)
        last = self.samples[-1] if self.samples else None
        if last is not None and last["outputs"] == outputs:
            last["count"] += 1
            last["last_t"] = now
        elif len(self.samples) >= MAX_SAMPLES:  # keep the newest reading in the last slot
            self.samples[-1] = {"t": now, "last_t": now, "count": 1, "outputs": outputs}
        else:
            self.samples.append({"t": now, "last_t": now, "count": 1, "outputs": outputs})

    def run(self):
        while not self.job["stop"].wait(self.job["sample_interval_s"]):
            if time.monotonic() >= self.job["deadline"]:
                return
            self.sample()


def pick_smi(smi):
    for entry in smi:
        if shutil.which(entry["tool"]):
            return entry["tool"], entry["commands"]
    return None, None


def run_smi(command, hard_deadline, limit):
    left = hard_deadline - time.monotonic()
    if left <= 0.2:
        return "ERROR: no time left for the SMI command"
    proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=min(limit, left))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a child must not hold the pipes
        proc.communicate()
        return f"ERROR: {command} did not finish in time"
    return out + ("\n" + err if "ERROR" in err else "")


def set_deadlines(job, start):
    job["deadline"] = start + job["duration_s"]
    job["hard_deadline"] = job["deadline"] + job["grace_s"]


def main():
    req = json.load(sys.stdin)
    t0 = time.monotonic()
    job = {"grace_s": float(req["grace_s"]), "duration_s": float(req["duration_s"]),
           "max_requests": int(req["max_requests"]), "stop": threading.Event(),
           "go": threading.Event(),
           "sample_interval_s": max(0.1, float(req.get("sample_interval_s", 0.5)))}
    set_deadlines(job, t0)  # the sample at rest and the set-up are bounded too
    sampler = Sampler(job, req.get("smi", []), t0)
    sampler.sample()  # before any request: what the services hold at rest
    audio = ({s: tone_wav(s) for s in AUDIO_SECONDS}
             if any(s["kind"] == "whisper" for s in req["services"]) else {})
    loads, refused, threads = {}, {}, []
    for svc in req["services"]:
        if not is_local(svc["url"]):
            refused[svc["name"]] = f"{svc['url']} is not an address of this host: refused"
            continue
        loads[svc["name"]] = load = ServiceLoad(svc, env_key(svc["env_file"]), job, audio)
        threads += [threading.Thread(target=load.worker, daemon=True)
                    for _ in range(max(1, int(svc["concurrency"])))]
    for thread in threads:  # idle until "go": with hundreds of busy threads a start would wait
        thread.start()     # its turn for the GIL, and late services would get no load
    set_deadlines(job, time.monotonic())
    job["go"].set()
    sampler.thread.start()
    for thread in threads:  # the hard deadline holds even if a server never answers
        thread.join(max(0.0, job["hard_deadline"] - time.monotonic()))
    job["stop"].set()
    sampler.thread.join(max(0.0, job["hard_deadline"] - time.monotonic()))
    if time.monotonic() < job["hard_deadline"] - 1:
        sampler.sample()  # after the load: what a leak left behind
    services = {name: load.result() for name, load in loads.items()}
    services.update({name: {"refused": why} for name, why in refused.items()})
    print(json.dumps({"elapsed_s": round(time.monotonic() - t0, 2), "smi_tool": sampler.tool,
                      "samples": sampler.samples, "services": services}))
    sys.stdout.flush()
    os._exit(0)  # daemon threads stuck in a hung server must not hold the exit


main()
