"""Secret values, read on the controller at deploy time and handed to render.

The inventory holds references only (`env:` variable or `file:` path); values live in memory for
the deploy and land on hosts only in root-only env files. `gpufleet render` never calls this.

A secret file readable by every user on the controller is an error, not a warning: the value is
already exposed to every account there (ssh refuses a private key for the same reason), and the fix
is one `chmod 600`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from gpufleet.errors import InputError, InputErrors
from gpufleet.inventory import Fleet, SecretSource


def resolve_secrets(fleet: Fleet, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every fleet secret's value, by secret name. Raises InputError(s) naming each problem."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    problems: list[InputError] = []
    for name, source in sorted(fleet.secrets.items()):
        try:
            values[name] = _checked(name, _read(name, source, environ))
        except InputError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputErrors(problems)
    return values


def _read(name: str, source: SecretSource, environ: Mapping[str, str]) -> str:
    if source.env is not None:
        if source.env not in environ:
            raise InputError(
                f"secret {name!r}: environment variable {source.env} is not set on the controller",
                where=f"fleet.secrets.{name}",
                hint=f"export {source.env}=... before deploying, or point the secret at a file",
            )
        return environ[source.env]
    return _read_file(name, Path(source.file or "").expanduser())


def _read_file(name: str, path: Path) -> str:
    where = f"fleet.secrets.{name}"
    try:
        mode = path.stat().st_mode
        if mode & stat.S_IROTH:
            raise InputError(f"secret {name!r}: {path} is readable by every user",
                             where=where, hint=f"chmod 600 {path}")
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InputError(f"secret {name!r}: file {path} does not exist", where=where,
                         hint=f"write the value to {path} (mode 0600)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"secret {name!r}: cannot read {path}: {exc}", where=where,
                         hint="check the path and its permissions") from None


def _checked(name: str, value: str) -> str:
    """An env file holds one line per variable: an empty or multi-line value cannot be passed."""
    if not value:
        raise InputError(f"secret {name!r} is empty", where=f"fleet.secrets.{name}",
                         hint="set a value, or remove the secret from the services using it")
    if "\n" in value or "\r" in value:
        raise InputError(f"secret {name!r} spans several lines", where=f"fleet.secrets.{name}",
                         hint="an env file holds one line per variable: store a single line")
    return value
