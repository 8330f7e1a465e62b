"""Serve one model: parse, start the emulated engine, listen; exit codes as vLLM's.

`python -m vllm.entrypoints.openai.api_server --model M [flags]` works as well as `vllm serve M`.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from ... import _deps
from ... import args as cli_args
from ... import engine as eng
from ..._log import info


class _Stop(BaseException):
    """SIGTERM/SIGINT: leave serve_forever (or the load sleep) and clean up. A BaseException:
    socketserver swallows an Exception raised while the main thread accepts a request, which
    under load is most of the time, and the double would then ignore the signal."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _fail(message: str, engine: eng.Engine | None) -> int:
    eng.release(engine)
    eng.report_failure(message)
    return 1


def serve(argv: list[str]) -> int:
    args = cli_args.parse(argv)  # SystemExit(2) on unknown flags, as argparse in vLLM
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    engine: eng.Engine | None = None
    try:
        cli_args.validate(args)
        info("api_server.py:1839", f"vLLM API server version {_deps.emulated_version()} "
             "(vllm-test-double: no GPU, no weights)")
        info("utils.py:233", f"non-default args: {_non_default(args)}")
        engine = eng.configure(args, dict(os.environ))
        server = _bind(engine)
        eng.start(engine)
        return _run(engine, server)
    except (cli_args.ConfigError, eng.StartupError) as e:
        return _fail(str(e), engine)
    except _Stop:
        eng.release(engine)
        info("launcher.py:101", "Shutting down FastAPI HTTP server.")
        return 0


def _non_default(args: object) -> dict[str, object]:
    defaults = vars(cli_args.build_parser().parse_args([]))
    return {k: v for k, v in vars(args).items() if defaults.get(k) != v and k != "api_key"}


def _bind(engine: eng.Engine):  # type: ignore[no-untyped-def]
    from ...server import make_server

    host = engine.args.host or "0.0.0.0"
    try:
        return make_server(engine, host, engine.args.port)
    except OSError as e:
        raise eng.StartupError(f"OSError: [Errno {e.errno}] {e.strerror}") from e


def _run(engine: eng.Engine, server) -> int:  # type: ignore[no-untyped-def]
    if engine.fail_mode == "crash":
        return _fail("RuntimeError: vllm-test-double: injected crash after load "
                     f"({eng.FAIL_ENV}=crash)", engine)
    try:
        server.server_activate()
    except OSError as e:
        return _fail(f"OSError: [Errno {e.errno}] {e.strerror}", engine)
    host, port = server.server_address[:2]
    info("api_server.py:1880", f"Starting vLLM API server 0 on http://{host}:{port}")
    print(f"INFO:     Started server process [{os.getpid()}]", file=sys.stderr)
    print("INFO:     Application startup complete.", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
