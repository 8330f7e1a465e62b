"""Commands from other distributions: `gpufleet lab` comes from gpufleet-lab's entry point, and
without the lab installed it says how to install it (exit 2) instead of failing obscurely."""

from __future__ import annotations

from typing import Any

import pytest
from support import run_cli

from gpufleet import cli


def test_the_lab_command_comes_from_its_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    found = {name: ep.value for name, ep in cli.plugins().items()}
    assert found.get("lab") == "gpufleet_lab.command"  # the set-up installs ./lab
    result = run_cli("lab", "up", "--help")
    assert result.exit_status == 0 and "--fake-gpus" in capsys.readouterr().out


def test_without_the_lab_gpufleet_lab_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def nothing(**_: Any) -> list[Any]:
        return []

    monkeypatch.setattr(cli, "entry_points", nothing)
    for argv in (["lab", "up", "3"], ["lab"], ["lab", "--help"]):
        result = run_cli(*argv)
        assert result.exit_status == 2, argv
        assert "pip install -e ./lab" in result.stderr
        assert "Traceback" not in result.stderr
    assert run_cli("--help").exit_status == 0
    assert "needs the gpufleet-lab" in capsys.readouterr().out  # still listed, with what it needs
