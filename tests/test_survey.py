"""The survey: its one command run by a real sh over real files, and the pure comparison."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from gpufleet.deploys.wanted import StepWanted, WantedFile, WantedVenv
from gpufleet.survey import (
    Observed,
    SurveySpec,
    differences,
    parse_survey,
    spec_for,
    survey_command,
)


def run_survey(spec: SurveySpec) -> Observed:
    out = subprocess.run(["sh", "-c", survey_command(spec)], capture_output=True, text=True,
                         check=True).stdout
    return parse_survey(out.splitlines())


def owner() -> tuple[str, str]:
    import grp
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def test_the_command_reads_modes_owners_and_hashes_of_real_files(tmp_path: Path) -> None:
    user, group = owner()
    env = tmp_path / "chat.env"
    env.write_text("VLLM_API_KEY=k\n")
    env.chmod(0o600)
    (tmp_path / "weird name").write_text("x")
    seen = run_survey(SurveySpec(paths=(str(env), str(tmp_path / "missing.env")),
                                 dirs=(str(tmp_path),), markers=(str(env),)))
    digest = hashlib.sha256(b"VLLM_API_KEY=k\n").hexdigest()
    assert seen.files == {str(env): ("600", user, group, digest)}
    assert seen.dirs[str(tmp_path)][1:] == (user, group)
    assert seen.markers == {str(env)}
    assert seen.os.get("ID")  # /etc/os-release was read
    assert seen.kernel == os.uname().release


def test_a_symlink_is_not_a_managed_file(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert run_survey(SurveySpec(paths=(str(tmp_path / "link"),))).files == {}


def test_converged_step_has_no_difference(tmp_path: Path) -> None:
    user, group = owner()
    path = tmp_path / "gpufleet-chat.service"
    path.write_text("[Unit]\n")
    path.chmod(0o644)
    want = {"services": StepWanted(files=[WantedFile(str(path), "[Unit]\n", "644", user, group)])}
    assert differences(want, run_survey(spec_for(want))) == {"services": []}


def test_every_kind_of_drift_is_a_difference(tmp_path: Path) -> None:
    user, group = owner()
    path = tmp_path / "chat.env"
    path.write_text("A=1\n")
    path.chmod(0o644)
    want = {"services": StepWanted(
        files=[WantedFile(str(path), "A=1\n", "600", user, group),
               WantedFile(str(tmp_path / "new.env"), "B=1\n", "600", user, group)],
        units=["gpufleet-nope.service"], unit_set=["gpufleet-chat.service"]),
        "runtime": StepWanted(debs=["surely-not-a-package"],
                              venvs=[WantedVenv(str(tmp_path / "venv"), "vllm", "0.19.1")],
                              dirs=[(str(tmp_path / "cache"), "755", user, group)]),
    }
    seen = run_survey(spec_for(want))
    found = differences(want, seen)
    assert f"{path} has mode/owner 644 {user} {group}" in found["services"]
    assert f"{tmp_path / 'new.env'} is missing" in found["services"]
    assert "gpufleet-nope.service is not enabled" in found["services"]
    assert "package surely-not-a-package is not installed" in found["runtime"]
    assert f"virtualenv {tmp_path / 'venv'} is missing" in found["runtime"]
    assert any("directory" in d for d in found["runtime"])
    path.write_text("A=2\n")
    assert f"{path} differs" in differences(want, run_survey(spec_for(want)))["services"]


def test_a_target_is_running_when_active() -> None:
    """pyinfra's status fact counts SubState 'running' only, so a target never looked running
    and every no-op 'changed' it; the survey reads ActiveState."""
    want = {"services": StepWanted(units=["gpufleet.target"])}
    seen = Observed(units={"gpufleet.target": {"Id": "gpufleet.target", "ActiveState": "active",
                                               "SubState": "active",
                                               "UnitFileState": "enabled"}})
    assert differences(want, seen) == {"services": []}


def test_stale_units_and_account_drift(tmp_path: Path) -> None:
    want = {"services": StepWanted(unit_set=["gpufleet-chat.service"]),
            "rocm": StepWanted(account=("gpufleet", ("render", "video"), "/var/lib/gpufleet"))}
    seen = Observed(installed=["gpufleet-chat.service", "gpufleet-old.service"],
                    passwd={"gpufleet": ("/var/lib/gpufleet", "/usr/sbin/nologin")},
                    groups={"render": {"gpufleet"}, "video": set()})
    found = differences(want, seen)
    assert found["services"] == ["gpufleet-old.service is no longer in the inventory"]
    assert found["rocm"] == ["user gpufleet is not in group video"]


def fake_venv(root: Path, python: str | None = None) -> Path:
    """A venv's shape: bin/activate, a python (a real interpreter or absent), site-packages."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "activate").write_text("")
    if python:  # a wrapper, not a symlink: a symlinked python would not be this venv's
        (root / "bin" / "python").write_text(f'#!/bin/sh\nexec {python} "$@"\n')
        (root / "bin" / "python").chmod(0o755)
    site = root / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    return site


def test_venv_version_is_read_from_the_dist_info_without_python(tmp_path: Path) -> None:
    site = fake_venv(tmp_path / "venv")  # no python at all: only METADATA can answer
    info = site / "vllm-0.19.1+rocm700.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.19.1+rocm700\n"
                                   "\nVersion: not-this-one (the description)\n")
    (site / "vllm_flash_attn-2.0.dist-info").mkdir()  # another distribution, same prefix
    seen = run_survey(SurveySpec(venvs=((str(tmp_path / "venv"), "vllm"),)))
    assert seen.venvs == {str(tmp_path / "venv"): "0.19.1+rocm700"}


def test_venv_version_falls_back_to_python_then_absent(tmp_path: Path) -> None:
    import sys

    fake_venv(tmp_path / "venv", python=sys.executable)  # no dist-info for this name
    spec = SurveySpec(venvs=((str(tmp_path / "venv"), "pytest"),
                             (str(tmp_path / "venv"), "surely-not-installed"),
                             (str(tmp_path / "none"), "vllm")))
    seen = run_survey(spec)
    import importlib.metadata

    # one venv dir: the later line wins; each line read on its own below
    assert seen.venvs[str(tmp_path / "venv")] is None
    assert str(tmp_path / "none") not in seen.venvs
    only = run_survey(SurveySpec(venvs=((str(tmp_path / "venv"), "pytest"),)))
    assert only.venvs == {str(tmp_path / "venv"): importlib.metadata.version("pytest")}


def test_sysctl_and_dirs_are_read_by_the_builtins(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    seen = run_survey(SurveySpec(sysctl=("kernel.ostype", "kernel.surely_not_a_key"),
                                 dirs=(str(tmp_path), str(tmp_path / "file"),
                                       str(tmp_path / "missing"))))
    assert seen.sysctl == {"kernel.ostype": "Linux"}
    assert list(seen.dirs) == [str(tmp_path)]  # a file or an absent path is not a directory
