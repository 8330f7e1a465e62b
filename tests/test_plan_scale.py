"""A large fleet plans like a small one: the same answers, a summary instead of 1,000 tables,
no command pulling in the deploy engine it does not use."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys

import pytest
import yaml
from rich.console import Console
from support import INVENTORIES

from gpufleet import inventory
from gpufleet.plan import build_plan
from gpufleet.views import DETAIL_HOSTS, show_plan

BERGET = INVENTORIES / "berget.yml"
PUBLISHED = INVENTORIES / "examples" / "berget-as-published.yml"


def copied(path, hosts: int) -> str:
    """The inventory's first host copied `hosts` times, as YAML text."""
    data = yaml.safe_load(path.read_text())
    name, host = next(iter(data["hosts"].items()))
    data["hosts"] = {f"{name}-{i}": {**copy.deepcopy(host), "address": f"{name}-{i}.example"}
                     for i in range(hosts)}
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def fleet_of_published():
    return build_plan(inventory.loads(copied(PUBLISHED, DETAIL_HOSTS + 5), "fleet.yml"))


def test_every_copy_plans_exactly_like_the_single_host(fleet_of_published):
    """Model facts and estimates are memoized: copies must still get their own, equal plans."""
    single = build_plan(inventory.load(PUBLISHED)).hosts[0].to_dict()
    for host in fleet_of_published.hosts:
        planned = host.to_dict()
        assert {**planned, "name": None, "address": None} == {
            **single, "name": None, "address": None}
    per_host = len([f for f in fleet_of_published.findings if f.host.endswith("-0")])
    assert len(fleet_of_published.findings) == per_host * (DETAIL_HOSTS + 5)


def test_a_large_fleet_is_summarised_with_findings_grouped(fleet_of_published):
    out = io.StringIO()
    show_plan(fleet_of_published, Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    assert "planned (· free)" not in text  # no per-host tables
    assert f"{DETAIL_HOSTS + 5} hosts, {8 * (DETAIL_HOSTS + 5)} GPUs" in text
    assert text.count("[free_memory]") == 1  # one line for the finding on every host
    assert f"on {DETAIL_HOSTS + 5} hosts: gpu-01-0, gpu-01-1, gpu-01-2 and" in text
    assert "--host NAME" in text and "--full" in text
    assert "plan has errors" in text


def test_full_shows_every_host(fleet_of_published):
    out = io.StringIO()
    show_plan(fleet_of_published, Console(file=out, width=160, color_system=None), full=True)
    assert out.getvalue().count("planned (· free)") == DETAIL_HOSTS + 5


def test_a_small_fleet_keeps_its_tables():
    out = io.StringIO()
    show_plan(build_plan(inventory.load(BERGET)), Console(file=out, width=160))
    assert "planned (· free)" in out.getvalue()


def test_a_large_plan_json_is_compact_and_complete(tmp_path, cli):
    path = tmp_path / "fleet.yml"
    path.write_text(copied(BERGET, 101))
    result = cli("plan", str(path), "--json")
    assert result.exit_status == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one line: past 100 hosts the JSON is not indented
    assert len(json.loads(result.stdout)["hosts"]) == 101


def test_plan_does_not_import_the_deploy_engine():
    """Each command imports only its own module: `plan` never pays for pyinfra and paramiko."""
    code = ("import sys; from gpufleet.cli import main; code = main(['plan', sys.argv[1], "
            "'--json']); heavy = [m for m in ('pyinfra', 'paramiko', 'gevent') if m in "
            "sys.modules]; print(heavy, file=sys.stderr); sys.exit(code or (3 if heavy else 0))")
    done = subprocess.run([sys.executable, "-c", code, str(BERGET)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_help_still_lists_every_command(cli, capsys):
    assert cli("--help").exit_status == 0
    listed = capsys.readouterr().out  # argparse prints help to the process's stdout
    for command in ("plan", "estimate", "deploy", "validate", "import", "smi", "rebuild"):
        assert f"    {command} " in listed
