"""The host contract: every name and path comes from host/layout, read back by one parser."""

from __future__ import annotations

import re

from support import REPO

from gpufleet.host import layout
from gpufleet.host.systemctl import by_service, parse_show


def test_names_and_their_inverse() -> None:
    assert layout.unit_name("chat") == "gpufleet-chat.service"
    assert layout.unit_path("chat") == "/etc/systemd/system/gpufleet-chat.service"
    assert layout.env_file_path("chat") == "/etc/gpufleet/chat.env"
    assert layout.container_name("chat") == layout.unit_id("chat") == "gpufleet-chat"
    for unit in ("gpufleet-chat.service", "gpufleet-chat", "/etc/systemd/system/gpufleet-chat"
                 ".service"):
        assert layout.service_of(unit) == "chat"
    for other in ("gpufleet.target", "sshd.service", "gpufleet-.service", "gpufleet-"):
        assert layout.service_of(other) is None
    assert layout.owner_of("/etc/gpufleet/embed.env", ["chat", "embed"]) == "embed"
    assert layout.owner_of("/etc/gpufleet/plan.json", ["chat"]) is None


def test_parse_show_keeps_systemds_ids_and_values_with_equals() -> None:
    text = ("Id=gpufleet-chat.service\nActiveState=active\nExecStart={ path=/x ; argv[]=/x a=b }\n"
            "\nId=gpufleet.target\nActiveState=active\n\nId=sshd.service\nActiveState=active\n")
    units = parse_show(text)
    assert list(units) == ["gpufleet-chat.service", "gpufleet.target", "sshd.service"]
    assert units["gpufleet-chat.service"]["ExecStart"] == "{ path=/x ; argv[]=/x a=b }"
    assert parse_show(text.splitlines()) == units  # pyinfra facts hand over lines
    assert list(by_service(units)) == ["chat"]


def test_no_module_spells_the_unit_convention_itself() -> None:
    """`gpufleet-<svc>.service` and /etc/gpufleet paths are built in host/layout only."""
    spelled = re.compile(r"f\"(gpufleet-\{|/etc/gpufleet/|/etc/systemd/system/gpufleet)")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "src" / "gpufleet").rglob("*.py")
                 if p.name != "layout.py" and spelled.search(p.read_text())]
    assert offenders == []


def test_host_scripts_are_files_not_modules() -> None:
    scripts = REPO / "src" / "gpufleet" / "host" / "scripts"
    assert sorted(p.name for p in scripts.glob("*.py")) == ["fetch_model.py", "load.py", "probe.py"]
    assert not (scripts / "__init__.py").exists()
