"""Deploy settings: the `gpufleet_*` knobs of group_data/all.py and the inventory's overrides.

Pure (no pyinfra): render reads the knobs that shape unit files (service user, venv paths) from
here, the deploys read the same values through pyinfra host data.

Every knob has a declared type (TYPES, below; group_data/all.py holds the defaults and why):
URLs are http(s) URLs, users and groups follow useradd, paths are absolute and plain, booleans
are strictly bool, integers strictly int, lists hold the right element type. The inventory's
`settings:` (fleet and host) are checked with these types at load, with file:line;
`validate_settings` checks any other source (`gpufleet deploy --set`, a settings file).
"""

from __future__ import annotations

import difflib
import re
import runpy
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    StrictBool,
    StrictInt,
    ValidationError,
    create_model,
)
from pydantic_core import core_schema

from gpufleet.errors import InputError, InputErrors
from gpufleet.vocabulary import (
    HostPath,
    HostPort,
    HttpUrl,
    Package,
    Requirement,
    RocmVersion,
    UnixName,
    UrlTemplate,
    shown,
)

if TYPE_CHECKING:
    from gpufleet.inventory import Inventory

PREFIX = "gpufleet_"
_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "group_data" / "all.py",  # a checkout
    Path(__file__).resolve().parent / "_group_data" / "all.py",  # the installed wheel
)

Step = Literal["rocm", "tuning", "runtime", "weights", "services"]

# The type of every knob. A knob in group_data/all.py without a type here is a test failure
# (tests/test_schema_vocabulary.py), and every default must have its declared type.
TYPES: dict[str, Any] = {
    "gpufleet_rocm_repo_url": HttpUrl,
    "gpufleet_amdgpu_repo_url": HttpUrl,
    "gpufleet_graphics_repo_url": HttpUrl,
    "gpufleet_rocm_key_url": HttpUrl,
    "gpufleet_rocm_keyring": HostPath,
    "gpufleet_amdgpu_version": RocmVersion | None,
    "gpufleet_rocm_pin_priority": Annotated[StrictInt, Field(ge=1, le=10000)],
    "gpufleet_rocm_prerequisite_packages": list[Package],
    "gpufleet_rocm_packages": list[Package],
    "gpufleet_rocm_install_driver": StrictBool,
    "gpufleet_rocm_driver_packages": list[Package],
    "gpufleet_rocm_reboot": StrictBool,
    "gpufleet_rocm_reboot_timeout": Annotated[StrictInt, Field(ge=1, le=86400)],
    "gpufleet_rocm_verify_gpus": StrictBool,
    "gpufleet_gpu_groups": list[UnixName],
    "gpufleet_tuning_iommu_pt": StrictBool,
    "gpufleet_tuning_grub_dropin": HostPath,
    "gpufleet_tuning_numa_balancing_off": StrictBool,
    "gpufleet_tuning_sysctl_file": HostPath,
    "gpufleet_service_user": UnixName,
    "gpufleet_service_home": HostPath,
    "gpufleet_venv_dir": HostPath,
    "gpufleet_pip_index_url": HttpUrl,
    "gpufleet_pip_extra_index_urls": list[HttpUrl],
    "gpufleet_vllm_extra_index_urls": list[UrlTemplate],
    "gpufleet_pip_trusted_hosts": list[HostPort],
    "gpufleet_vllm_requirement": Requirement,
    "gpufleet_docling_venv_dir": HostPath,
    "gpufleet_docling_requirement": Requirement,
    "gpufleet_container_packages": dict[Literal["docker", "podman"], list[Package]],
    "gpufleet_weights_download": StrictBool,
    "gpufleet_weights_venv_dir": HostPath,
    "gpufleet_weights_requirement": Requirement,
    "gpufleet_weights_state_dir": HostPath,
    "gpufleet_steps": list[Step],
    "gpufleet_unit_read_write_paths": list[HostPath],
}


class _SettingsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Every field optional: a mapping of settings names only the knobs it overrides.
SettingsModel: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "SettingsModel", __base__=_SettingsBase,
    **{name: (kind, Field(None, description=name)) for name, kind in TYPES.items()},
)


def _only_set(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True)


# The schema of a `settings:` mapping of the inventory: typed per knob (errors located per
# key), kept a plain dict of the knobs it sets. Use as `Annotated[dict[str, Any], SETTINGS]`.
SETTINGS = GetPydanticSchema(
    lambda _tp, handler: core_schema.no_info_after_validator_function(
        _only_set, handler(SettingsModel)
    )
)


@cache
def defaults() -> dict[str, Any]:
    """Every `gpufleet_*` knob of group_data/all.py: the single source of the defaults."""
    for path in _CANDIDATES:
        if path.is_file():
            values = runpy.run_path(str(path))
            return {k: v for k, v in values.items() if k.startswith(PREFIX)}
    raise FileNotFoundError(f"group_data/all.py not found (looked in {_CANDIDATES})")


def nearest_settings(name: object) -> list[str]:
    """Known knobs spelled most like `name`."""
    return difflib.get_close_matches(str(name), list(TYPES), n=3, cutoff=0.6)


def unknown_setting_hint(name: object) -> str:
    close = nearest_settings(name)
    base = "settings are the gpufleet_* knobs of group_data/all.py (README: Settings)"
    return f"did you mean {', '.join(close)}? {base}" if close else base


def validate_settings(
    values: Mapping[str, Any], where: Callable[[str], str | None] | str
) -> dict[str, Any]:
    """Type-check settings from any source; returns them (only the given keys), or raises
    InputErrors (exit 2) naming each bad key and what it allows.

    `where` locates a key: a callable key -> `file:line:col` (an inventory's settings), or a
    label such as "--set" that the message puts before the key ("--set gpufleet_x: ...").
    """
    try:
        return _only_set(SettingsModel.model_validate(dict(values)))
    except ValidationError as exc:
        raise InputErrors([_setting_error(err, where) for err in exc.errors()]) from None


def _setting_error(err: Any, where: Callable[[str], str | None] | str) -> InputError:
    key = str(err["loc"][0]) if err["loc"] else ""
    name = key if re.fullmatch(r"[A-Za-z0-9_]{1,80}", key) else shown(key, 80)
    label = f"{where} {name}" if isinstance(where, str) else f"setting {name}"
    at = None if isinstance(where, str) else where(key)
    if err["type"] == "extra_forbidden":
        return InputError(f"{label}: unknown setting", where=at, hint=unknown_setting_hint(key))
    return InputError(f"{label}: {message(err)}", where=at, hint=_setting_hint(key))


def message(err: Any) -> str:
    """A pydantic error as one sentence, with the offending value shown safely (repr)."""
    text = str(err.get("msg", ""))
    if err.get("type") == "value_error":
        text = str(err.get("ctx", {}).get("error", text))
    inner = [str(p) for p in err.get("loc", ())[1:]]
    where = f" (item {'.'.join(inner)})" if inner else ""
    value = err.get("input")
    got = f" (got {shown(value)})" if not isinstance(value, dict | list) else ""
    if shown(value) in text:
        got = ""
    return f"{text}{where}{got}"


def _setting_hint(key: str) -> str | None:
    known = defaults()
    return f"the default is {known[key]!r} (group_data/all.py)" if key in known else None


def resolve(inv: Inventory, host: str) -> dict[str, Any]:
    """Every knob's value for one host: the one resolver that render (the units) and the
    deploys (pyinfra host data) both read, so a value given on any channel reaches both.

    By precedence: group_data/all.py < `fleet.settings` < the host's `settings` < the run's
    overrides (`inv.overrides`: `gpufleet deploy --set`; under pyinfra's CLI, the host's pyinfra
    data: `--data`, GPUFLEET_SETTINGS and group_data files).
    """
    return {**defaults(), **inv.fleet.settings, **inv.hosts[host].settings, **inv.overrides}


def host_setting(inv: Inventory, host: str, name: str) -> Any:
    """One knob for one host (see `resolve`)."""
    if name not in defaults():
        raise KeyError(f"{name} is not a gpufleet setting (see group_data/all.py)")
    return resolve(inv, host)[name]


def setting_origin(inv: Inventory, host: str, name: str) -> str:
    """Where a host's value of a knob comes from, for error messages."""
    if name in inv.overrides:
        return "--set (or the host's pyinfra data)"
    if name in inv.hosts[host].settings:
        return inv.where("hosts", host, "settings", name)
    if name in inv.fleet.settings:
        return inv.where("fleet", "settings", name)
    return "group_data/all.py"
