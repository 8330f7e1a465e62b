"""One look at a host before any deploy: is each step already in its wanted state?

The survey reads everything the deploy steps manage — the hashes, modes and owners of all
managed files, one `systemctl show` for all units, one dpkg query, the venv versions, images,
download markers, the service account — in ONE command per host, run on all hosts in parallel.
`differences` is pure: a step with no difference needs no pyinfra operation at all, so a
converged host is `unchanged` without a single changing command, and a host with changes gets
pyinfra only for the steps that differ (pyinfra then decides, operation by operation, as always).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import FactBase

from gpufleet.deploys.target import HostTarget
from gpufleet.deploys.wanted import (
    RocmRelease,
    Settings,
    StepWanted,
    UnsupportedHost,
    host_wanted,
    release_for,
)
from gpufleet.deploys.wanted import rocm as rocm_wanted
from gpufleet.facts import mode_text, normalize_image
from gpufleet.gpu.amd import AMD
from gpufleet.host.layout import PREFIX, SUFFIX, UNIT_DIR
from gpufleet.host.systemctl import parse_show

SECTIONS = ("os", "kernel", "cmdline", "files", "hashes", "dirs", "debs", "units", "installed",
            "venvs", "images", "markers", "passwd", "groups", "sysctl", "gpus", "keyring")


@dataclass(frozen=True)
class SurveySpec:
    """What to read (hashable: pyinfra caches facts by their arguments)."""

    paths: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    debs: tuple[str, ...] = ()
    kernel_headers: bool = False
    units: tuple[str, ...] = ()
    venvs: tuple[tuple[str, str], ...] = ()  # (venv dir, distribution)
    engine: str | None = None
    markers: tuple[str, ...] = ()
    user: str | None = None
    groups: tuple[str, ...] = ()
    sysctl: tuple[str, ...] = ()
    gpus: bool = False
    keyring: str | None = None


@dataclass
class Observed:
    """What the survey saw on one host."""

    os: dict[str, str] = field(default_factory=dict)
    kernel: str = ""
    cmdline: list[str] = field(default_factory=list)
    files: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    dirs: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    debs: set[str] = field(default_factory=set)
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    installed: list[str] = field(default_factory=list)
    venvs: dict[str, str | None] = field(default_factory=dict)  # dir -> version (None: absent)
    images: set[str] = field(default_factory=set)
    markers: set[str] = field(default_factory=set)
    passwd: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> (home, shell)
    groups: dict[str, set[str]] = field(default_factory=dict)  # group -> members
    sysctl: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    keyring_mode: str | None = None


def spec_for(wanted: Mapping[str, StepWanted]) -> SurveySpec:
    steps = list(wanted.values())
    account = next((w.account for w in steps if w.account), None)
    images = [i for w in steps for i in w.images]
    return SurveySpec(
        paths=tuple(sorted({f.path for w in steps for f in w.files})),
        dirs=tuple(sorted({d[0] for w in steps for d in w.dirs})),
        debs=tuple(sorted({p.split("=", 1)[0] for w in steps for p in w.debs})),
        kernel_headers=any(w.kernel_headers for w in steps),
        units=tuple(sorted({u for w in steps for u in w.units})),
        venvs=tuple(sorted({(v.path, v.dist) for w in steps for v in w.venvs})),
        engine=_engine(wanted) if images else None,
        markers=tuple(sorted({m for w in steps for m in w.markers})),
        user=account[0] if account else None,
        groups=account[1] if account else (),
        sysctl=tuple(sorted({k for w in steps for k in w.sysctl})),
        gpus=any(w.gpus for w in steps),
        keyring=next((w.keyring for w in steps if w.keyring), None),
    )


def _engine(wanted: Mapping[str, StepWanted]) -> str:
    runtime = wanted.get("runtime")
    if runtime and "podman" in runtime.debs:
        return "podman"
    return "docker"


# ---------------------------------------------------------------- the one command


def survey_command(spec: SurveySpec) -> str:
    """A POSIX sh script that prints every section; it changes nothing."""
    q, parts = shlex.quote, []

    def section(name: str, body: str) -> None:
        parts.append(f"echo @@{name}; {{ {body}; }} 2>/dev/null")

    def each(items: tuple[str, ...], var: str, body: str) -> str:
        return f"for {var} in {' '.join(q(i) for i in items)}; do {body}; done" if items else ":"

    # Shell builtins where a process would do the same (show = cat): the survey runs on every
    # host on every run, so each fork it saves is saved fleet-wide on every no-op.
    parts.append('show() { while IFS= read -r l || [ -n "$l" ]; do printf "%s\\n" "$l"; done '
                 '< "$1"; }')
    section("os", "show /etc/os-release")
    section("kernel", "show /proc/sys/kernel/osrelease")
    section("cmdline", "show /proc/cmdline")
    # One find and one sha256sum for all managed files (not four processes per file): the
    # survey runs on every host on every run, so its cost is what a no-op costs per host.
    # find -P -type f leaves out symlinks and absent paths, as the deploy's own fact does.
    paths = " ".join(q(p) for p in spec.paths)
    section("files", f"find {paths} -maxdepth 0 -type f -printf '%m %u %g %p\\n'"
            if paths else ":")
    section("hashes", f"find {paths} -maxdepth 0 -type f -exec sha256sum -- {{}} +"
            if paths else ":")
    dirs = " ".join(q(d) for d in spec.dirs)
    section("dirs", f"find {dirs} -maxdepth 0 -type d -printf '%m %u %g %p\\n'"
            if dirs else ":")
    debs = " ".join(q(d) for d in spec.debs)
    if spec.kernel_headers:
        debs += ' "linux-headers-$(uname -r)"'
    section("debs", f"dpkg-query -W -f='${{db:Status-Abbrev}} ${{Package}}\\n' {debs}"
            if debs.strip() else ":")
    units = " ".join(q(u) for u in spec.units)
    section("units", "systemctl show -p Id,LoadState,ActiveState,SubState,UnitFileState "
            f"{units}" if units else ":")
    section("installed", f'for f in {UNIT_DIR}/{PREFIX}?*{SUFFIX}; do [ -f "$f" ] && '
            'echo "${f##*/}"; done')
    section("venvs", "; ".join(_venv_version(d, dist) for d, dist in spec.venvs) or ":")
    section("images", f"{spec.engine} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}'"
            if spec.engine else ":")
    section("markers", each(spec.markers, "m", '[ -f "$m" ] && echo "$m"'))
    section("passwd", f"getent passwd {q(spec.user)}" if spec.user else ":")
    section("groups", f"getent group {' '.join(q(g) for g in spec.groups)}"
            if spec.groups else ":")
    section("sysctl", "; ".join(f'read -r v < /proc/sys/{q(k.replace(".", "/"))} && '
                                f'printf "%s %s\\n" {q(k)} "$v"' for k in spec.sysctl) or ":")
    section("gpus", AMD.survey_gpus_script() if spec.gpus else ":")
    section("keyring", f"stat -c %a {q(spec.keyring)}" if spec.keyring else ":")
    return "\n".join(parts) + "\ntrue"


def _venv_version(venv: str, dist: str) -> str:
    """Shell: `VENV VERSION` from the distribution's METADATA (no Python start on a no-op);
    Python's importlib.metadata only when no such dist-info folder is found (an egg, a name
    spelled otherwise), `VENV -` when the distribution is absent."""
    q = shlex.quote
    folder = re.sub(r"[-_.]+", "_", dist)
    code = q("import importlib.metadata as m, sys; print(m.version(sys.argv[1]))")
    return (f'[ -f {q(venv)}/bin/activate ] && {{ v=$(sed -n "/^Version: /{{s///p;q}}" '
            f'{q(venv)}/lib/python3*/site-packages/{q(folder)}-*.dist-info/METADATA | head -n1); '
            f'[ -n "$v" ] || v=$({q(venv)}/bin/python -c {code} {q(dist)} || echo -); '
            f'printf "%s %s\\n" {q(venv)} "$v"; }}')


def parse_survey(lines: list[str]) -> Observed:
    """The script's output -> Observed (unknown sections and lines are ignored)."""
    raw: dict[str, list[str]] = {name: [] for name in SECTIONS}
    current = None
    for line in lines:
        if line.startswith("@@") and line[2:].strip() in raw:
            current = line[2:].strip()
        elif current is not None:
            raw[current].append(line.rstrip("\n"))
    seen = Observed()
    seen.os = _os_release(raw["os"])
    seen.kernel = raw["kernel"][0].strip() if raw["kernel"] else ""
    seen.cmdline = " ".join(raw["cmdline"]).split()
    seen.files = _files(raw["files"], raw["hashes"])
    seen.dirs = {p[3]: (mode_text(p[0]), p[1], p[2]) for p in map(str.split, raw["dirs"])
                 if len(p) == 4}
    seen.debs = {p[1] for p in map(str.split, raw["debs"]) if len(p) == 2 and p[0] == "ii"}
    seen.units = parse_show(raw["units"])
    seen.installed = sorted(line.strip() for line in raw["installed"] if line.strip())
    seen.venvs = {p[0]: (p[1] if p[1] != "-" else None) for p in map(str.split, raw["venvs"])
                  if len(p) == 2}
    seen.images = {normalize_image(line.strip()) for line in raw["images"] if line.strip()}
    seen.markers = {line.strip() for line in raw["markers"] if line.strip()}
    seen.passwd = _passwd(raw["passwd"])
    seen.groups = _groups(raw["groups"])
    seen.sysctl = {p[0]: p[1] for p in map(str.split, raw["sysctl"]) if len(p) == 2}
    seen.gpus = len([line for line in raw["gpus"] if line.startswith("GPU[")])
    seen.keyring_mode = mode_text(raw["keyring"][0].strip()) if raw["keyring"] else None
    return seen


def _os_release(lines: list[str]) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in lines if "=" in line)
    return {k.strip(): v.strip().strip('"') for k, v in pairs}


def _files(stats: list[str], hashes: list[str]) -> dict[str, tuple[str, str, str, str]]:
    """`MODE USER GROUP PATH` and sha256sum's `DIGEST  PATH` lines -> path -> the four."""
    digests = {}
    for line in hashes:
        digest, _, path = line.partition(" ")
        digests[path.lstrip(" *")] = digest
    states = {}
    for line in stats:
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[3] in digests:
            states[parts[3]] = (mode_text(parts[0]), parts[1], parts[2], digests[parts[3]])
    return states


def _passwd(lines: list[str]) -> dict[str, tuple[str, str]]:
    rows = (line.split(":") for line in lines)
    return {r[0]: (r[5], r[6]) for r in rows if len(r) >= 7}


def _groups(lines: list[str]) -> dict[str, set[str]]:
    rows = (line.split(":") for line in lines)
    return {r[0]: {m for m in r[3].split(",") if m} for r in rows if len(r) >= 4}


class SurveyFact(FactBase[Observed]):
    """
    Everything the deploy steps manage on the host, in one command (see SurveySpec):

    .. code:: python

        Observed(files={"/etc/gpufleet/chat.env": ("600", "root", "root", "…")}, …)
    """

    def command(self, spec: SurveySpec) -> str:
        return survey_command(spec)

    def process(self, output: list[str]) -> Observed:
        return parse_survey(output)


# ---------------------------------------------------------------- the comparison (pure)


def differences(wanted: Mapping[str, StepWanted], seen: Observed) -> dict[str, list[str]]:
    """Step -> what differs on the host (empty list: the step is converged)."""
    return {step: _step_differences(want, seen) for step, want in wanted.items()}


def _step_differences(want: StepWanted, seen: Observed) -> list[str]:
    found = _file_differences(want, seen) + _package_differences(want, seen)
    found += _unit_differences(want, seen) + _account_differences(want, seen)
    for key, value in want.sysctl.items():
        if seen.sysctl.get(key) != str(value):
            found.append(f"sysctl {key} is {seen.sysctl.get(key, 'unknown')}, wanted {value}")
    if want.gpus and seen.gpus < want.gpus:
        found.append(f"rocm-smi lists {seen.gpus} of {want.gpus} GPUs")
    if want.keyring and seen.keyring_mode != "644":
        found.append(f"keyring {want.keyring} is missing")
    return found


def _file_differences(want: StepWanted, seen: Observed) -> list[str]:
    import hashlib

    found = []
    for f in want.files:
        have = seen.files.get(f.path)
        digest = hashlib.sha256(f.content.encode()).hexdigest()
        if have is None:
            found.append(f"{f.path} is missing")
        elif have[3] != digest:
            found.append(f"{f.path} differs")
        elif have[:3] != (mode_text(f.mode), f.user, f.group):
            found.append(f"{f.path} has mode/owner {' '.join(have[:3])}")
    for path, mode, user, group in want.dirs:
        if seen.dirs.get(path) != (mode_text(mode), user, group):
            found.append(f"directory {path} is missing or has another mode/owner")
    for marker in want.markers:
        if marker not in seen.markers:
            found.append(f"download marker {marker} is missing")
    return found


def _package_differences(want: StepWanted, seen: Observed) -> list[str]:
    found = [f"package {p} is not installed" for p in want.debs
             if p.split("=", 1)[0] not in seen.debs]
    if want.kernel_headers and f"linux-headers-{seen.kernel}" not in seen.debs:
        found.append(f"linux-headers-{seen.kernel} is not installed")
    for v in want.venvs:
        if v.path not in seen.venvs:
            found.append(f"virtualenv {v.path} is missing")
        elif seen.venvs[v.path] is None or (v.version and seen.venvs[v.path] != v.version):
            found.append(f"{v.dist} in {v.path} is {seen.venvs[v.path] or 'absent'}, "
                         f"wanted {v.version or 'any version'}")
    found += [f"image {i} is not present" for i in want.images
              if normalize_image(i) not in seen.images]
    return found


def _unit_differences(want: StepWanted, seen: Observed) -> list[str]:
    found = []
    for unit in want.units:
        state = seen.units.get(unit, {})
        if state.get("UnitFileState") != "enabled":
            found.append(f"{unit} is not enabled")
        if state.get("ActiveState") not in ("active", "activating", "reloading"):
            found.append(f"{unit} is {state.get('ActiveState', 'unknown')}")
    if want.unit_set is not None:
        stale = sorted(set(seen.installed) - set(want.unit_set))
        found += [f"{unit} is no longer in the inventory" for unit in stale]
    return found


def _account_differences(want: StepWanted, seen: Observed) -> list[str]:
    if want.account is None:
        return []
    user, groups, home = want.account
    if user not in seen.passwd:
        return [f"user {user} is missing"]
    found = []
    if seen.passwd[user] != (home, "/usr/sbin/nologin"):
        found.append(f"user {user} has home/shell {' '.join(seen.passwd[user])}")
    for group in groups:
        if user not in seen.groups.get(group, set()):
            found.append(f"user {user} is not in group {group}")
    return found


# ---------------------------------------------------------------- one host


@dataclass
class HostSurvey:
    """The survey's verdict on one host: per step, what differs (empty: converged)."""

    differences: dict[str, list[str]]
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def converged(self) -> bool:
        return self.error is None and not any(self.differences.values())

    def steps_to_run(self) -> list[str]:
        return [step for step, found in self.differences.items() if found]


def survey_host(host: Any, target: HostTarget, settings: Settings, steps: list[str]
                ) -> HostSurvey:
    """Read a pyinfra host once (SurveyFact) and compare it with each chosen step's end state."""
    return compare_host(lambda spec: host.get_fact(SurveyFact, spec=spec), target, settings,
                        steps)


def survey_session(session: Any, target: HostTarget, settings: Settings, steps: list[str]
                   ) -> HostSurvey:
    """The same over an open SSH session (the run's lock session: no second connection)."""
    def read(spec: SurveySpec) -> Observed:
        return parse_survey(session.run(survey_command(spec), timeout=120).stdout.splitlines())

    return compare_host(read, target, settings, steps)


def compare_host(read: Callable[[SurveySpec], Observed], target: HostTarget,
                 settings: Settings, steps: list[str]) -> HostSurvey:
    placeholder = RocmRelease("jammy", target.fleet.rocm_version, target.fleet.rocm_version)
    wanted = host_wanted(target, settings, steps, placeholder)
    seen = read(spec_for(wanted))
    if "rocm" in wanted:
        release = host_release(seen, target, settings)
        if release is None:  # unsupported: pyinfra's prepare stops the host with the reason
            return HostSurvey({**{s: [] for s in steps}, "rocm": ["unsupported host"]})
        wanted["rocm"] = rocm_wanted(target, settings, release)
    warnings = [w for want in wanted.values() for w in want.warnings]
    warnings += [f"{word} is configured but not active: it applies at the next reboot"
                 for want in wanted.values() for word in want.cmdline
                 if word not in seen.cmdline]
    return HostSurvey(differences(wanted, seen), warnings)


def host_release(seen: Observed, target: HostTarget, settings: Settings) -> RocmRelease | None:
    distro = seen.os.get("ID", "")
    version = seen.os.get("VERSION_ID", "0").split(".")
    try:
        return release_for(distro, int(version[0]) if version[0].isdigit() else 0, distro,
                           target.name, target.fleet.rocm_version, settings)
    except UnsupportedHost:
        return None
