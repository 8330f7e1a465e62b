"""The lab's package server (stdlib only; run as a script by `gpufleet_lab.mirror`).

Serves, on the lab bridge address:
  /rocm/rocm.gpg.key                     armored public key, as repo.radeon.com serves AMD's
  /rocm/apt/<any ver>/dists|pool/...     signed apt repo (rocm-smi and its deps)
  /amdgpu/<any ver>/ubuntu/dists|pool/   signed apt repo (empty: no kernel driver in a container)
  /graphics/<any ver>/ubuntu/...         signed apt repo (empty; ROCm 7.x adds this line)
  /simple/ and /simple/<project>/        PEP 503 index of the wheelhouse, read at request time
  /wheels/<file>                         the wheelhouse files
Any version segment maps to the same repo, so a deploy may pin whatever version it likes.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import os
import re
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROUTES = [
    (re.compile(r"^/rocm/rocm\.gpg\.key$"), "key"),
    (re.compile(r"^/rocm/apt/[^/]+/(?P<rest>.*)$"), "repos/rocm"),
    (re.compile(r"^/amdgpu/[^/]+/ubuntu/(?P<rest>.*)$"), "repos/amdgpu"),
    (re.compile(r"^/graphics/[^/]+/ubuntu/(?P<rest>.*)$"), "repos/graphics"),
]
DIST_EXTS = (".whl", ".tar.gz", ".zip")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_project(filename: str) -> str:
    """Project name of a wheel or sdist file name (PEP 427 / PEP 625)."""
    stem = filename.removesuffix(".whl").removesuffix(".tar.gz").removesuffix(".zip")
    if filename.endswith(".whl"):
        return normalize(stem.split("-")[0])
    return normalize(stem.rsplit("-", 1)[0])


class Handler(SimpleHTTPRequestHandler):
    www: Path
    wheels: Path

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self._dispatch(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def _dispatch(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/simple"):
            return self._simple(path, head)
        if path.startswith("/wheels/"):
            return self._file(self.wheels / path[len("/wheels/") :], head)
        for pattern, target in ROUTES:
            m = pattern.match(path)
            if m:
                if target == "key":
                    return self._file(self.www / "rocm.gpg.key", head)
                return self._file(self.www / target / m.group("rest"), head)
        self.send_error(404)

    def _file(self, path: Path, head: bool) -> None:
        path = path.resolve()
        roots = (self.www.resolve(), self.wheels.resolve())
        if not any(path.is_relative_to(r) for r in roots) or not path.is_file():
            self.send_error(404)
            return
        data = b"" if head else path.read_bytes()
        self._send(data, self.guess_type(str(path)), length=path.stat().st_size)

    def _simple(self, path: Path | str, head: bool) -> None:
        parts = [p for p in str(path).split("/") if p]
        files = (
            sorted(f for f in os.listdir(self.wheels) if f.endswith(DIST_EXTS))
            if self.wheels.is_dir()
            else []
        )
        if len(parts) == 1:
            projects = sorted({dist_project(f) for f in files})
            body = "".join(f'<a href="/simple/{p}/">{p}</a><br>\n' for p in projects)
        elif len(parts) == 2:
            wanted = [f for f in files if dist_project(f) == normalize(parts[1])]
            if not wanted:
                self.send_error(404)
                return
            body = "".join(self._link(f) for f in wanted)
        else:
            self.send_error(404)
            return
        page = f"<!DOCTYPE html>\n<html><body>\n{body}</body></html>\n".encode()
        self._send(b"" if head else page, "text/html", length=len(page))

    def _link(self, filename: str) -> str:
        digest = hashlib.sha256((self.wheels / filename).read_bytes()).hexdigest()
        name = html.escape(filename)
        return f'<a href="/wheels/{name}#sha256={digest}">{name}</a><br>\n'

    def _send(self, data: bytes, ctype: str, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quieter, one line a request
        print(f"{self.address_string()} {format % args}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--www", type=Path, required=True)
    ap.add_argument("--wheels", type=Path, required=True)
    ap.add_argument("--tag", default="")  # only there so `down` can find this process by name
    args = ap.parse_args()
    Handler.www, Handler.wheels = args.www, args.wheels
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
