"""The lab itself, end to end: real hosts over real ssh with strict host-key checking, the
signed apt mirror and PyPI index, pyinfra against the hosts, link cuts, host rebuilds, and a
`down` that leaves nothing behind even after a crash."""

from __future__ import annotations

import dataclasses
import io
import re
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import gpufleet.cli
import gpufleet_lab as labmod
from gpufleet.env import Environment
from gpufleet_lab import Lab, LabConfig, procs
from gpufleet_lab.base import build_base
from gpufleet_lab.ssh import ssh

pytestmark = pytest.mark.e2e
PYINFRA = Path(__file__).resolve().parents[2] / ".venv/bin/pyinfra"
APT_SETUP = """set -e
mkdir -p -m 0755 /etc/apt/keyrings
curl -fsS {url}/rocm/rocm.gpg.key | gpg --dearmor 2>/dev/null > /etc/apt/keyrings/rocm.gpg
opts='arch=amd64 signed-by=/etc/apt/keyrings/rocm.gpg'
echo "deb [$opts] {url}/amdgpu/6.4.3/ubuntu jammy main" > /etc/apt/sources.list.d/amdgpu.list
echo "deb [$opts] {url}/rocm/apt/6.4.3 jammy main" > /etc/apt/sources.list.d/rocm.list
printf 'Package: *\\nPin: release o=repo.radeon.com\\nPin-Priority: 600\\n' \
  > /etc/apt/preferences.d/rocm-pin-600
apt-get update -q
apt-cache policy rocm-smi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rocm-smi
rocm-smi || true  # exits non-zero when a value is N/A; the output is the check
"""


def test_hosts_boot_to_running_over_strict_ssh(lab: Lab) -> None:
    assert [h.name for h in lab.hosts] == [lab.config.host_name(i) for i in (1, 2, 3)]
    config = lab.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in config and str(lab.known_hosts) in config
    for host in lab.hosts:
        res = ssh(
            lab, host, "hostname; systemctl is-system-running --wait; cut -d. -f1 /proc/uptime"
        )
        assert res.returncode == 0, res.stderr
        name, state, uptime = res.stdout.split()
        assert (name, state) == (host.name, "running")
        assert int(uptime) < 600  # own time namespace: the guest's uptime, not the machine's


def test_strict_checking_rejects_unknown_host_key(lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = lab.hosts[0]
    res = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(lab.key), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={empty}",
         "-o", "GlobalKnownHostsFile=/dev/null", f"root@{host.address}", "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 255
    assert "Host key verification failed" in res.stderr


def test_exec_in_and_hosts_isolation(lab: Lab) -> None:
    cfg = lab.config
    host = lab.hosts[0]
    res = labmod.exec_in(cfg, host.name, "hostname; ip -o -4 addr show dev eth0; ip route")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(host.name) and f" {host.address}/24 " in res.stdout
    assert "default" not in res.stdout  # no route out of the lab
    dns = labmod.exec_in(cfg, host.name, "getent hosts example.com", timeout=10)
    assert dns.returncode != 0  # resolver on the bridge answers nothing, fast


def test_cut_link_fails_fast_and_restore_brings_host_back(lab: Lab) -> None:
    cfg, host = lab.config, lab.hosts[2]
    labmod.cut_link(cfg, host.name)
    try:
        t0 = time.monotonic()
        res = ssh(lab, host, "true", timeout=30)
        elapsed = time.monotonic() - t0
        assert res.returncode == 255
        assert elapsed < 8, f"ssh to a cut host took {elapsed:.1f} s"
        assert "link down" in {s.name: s for s in labmod.status(cfg)}[host.name].state
    finally:
        labmod.restore_link(cfg, host.name)
    assert _eventually(lambda: ssh(lab, host, "true", timeout=10).returncode == 0, 15)


def test_guest_reboot_comes_back_with_a_fresh_uptime(lab: Lab) -> None:
    host = lab.hosts[2]
    launchers = procs.launcher_pids(lab.config, host.name)
    ssh(lab, host, "systemctl reboot", timeout=10)
    time.sleep(1)  # let the old sshd go before polling, or the poll may see it
    assert _eventually(lambda: ssh(lab, host, "true", timeout=5).returncode == 0, 30)
    res = ssh(lab, host, "systemctl is-system-running --wait; cut -d. -f1 /proc/uptime")
    state, uptime = res.stdout.split()
    assert state == "running" and int(uptime) < 20  # pyinfra's server.reboot relies on this
    assert procs.launcher_pids(lab.config, host.name) == launchers  # restarted by the same loop


def test_base_is_not_rebuilt_under_live_hosts(lab: Lab) -> None:
    with pytest.raises(labmod.LabError, match="live lab hosts use it"):
        build_base(lab.config, force=True)


def test_destroy_and_recreate_give_a_bare_host_with_a_new_key(lab: Lab) -> None:
    cfg, host = lab.config, lab.hosts[1]
    assert ssh(lab, host, "touch /root/was-here").returncode == 0
    old_key = _known_key(lab, host.name)
    labmod.destroy_host(cfg, host.name)
    assert host.name not in _netns() and not (cfg.host_dir(host.name)).exists()
    assert ssh(lab, host, "true", timeout=15).returncode == 255
    labmod.recreate_host(cfg, host.name)
    new_key = _known_key(lab, host.name)
    assert new_key != old_key
    res = ssh(lab, host, "test -e /root/was-here && echo dirty; systemctl is-system-running")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["running"]
    others = [h for h in lab.hosts if h is not host]
    assert all(ssh(lab, h, "true").returncode == 0 for h in others)


def test_apt_mirror_installs_rocm_smi_in_a_host(lab: Lab) -> None:
    host = lab.hosts[0]
    res = ssh(lab, host, APT_SETUP.format(url=lab.mirror_url), timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    # "*** " marks the installed version (the fleet tests may have installed it already)
    assert re.search(r"Candidate: \S+\s+Version table:\s+(\*\*\* )?\S+ 600\b", res.stdout), \
        res.stdout
    assert "ROCm System Management Interface" in res.stdout
    release = ssh(lab, host, "head -c 200 /var/lib/apt/lists/*rocm_apt_6.4.3_dists_jammy_InRelease")
    assert "BEGIN PGP SIGNED MESSAGE" in release.stdout
    if labmod.hosts.FAKEGPU.exists() and lab.config.fake_gpus:
        show = ssh(lab, host, "rocm-smi --showmeminfo vram --json")
        assert show.stdout.count('"card') == lab.config.fake_gpus, show.stdout


def test_pypi_index_serves_the_wheelhouse(lab: Lab) -> None:
    wheel = lab.wheels_dir / "gflab_probe-0.1-py3-none-any.whl"
    wheel.write_bytes(_tiny_wheel("gflab_probe", "0.1"))
    try:
        host = lab.hosts[0]
        url = lab.mirror_url
        script = (
            "set -e; python3 -m venv /tmp/v; "
            f"/tmp/v/bin/pip install -q --no-cache-dir --index-url {url}/simple/ "
            f"--trusted-host {lab.config.bridge_ip} gflab-probe==0.1; "
            "/tmp/v/bin/python -c 'import gflab_probe; print(gflab_probe.OK)'"
        )
        res = ssh(lab, host, script, timeout=180)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert res.stdout.strip().endswith("probe-ok")
    finally:
        wheel.unlink()


def test_pyinfra_runs_server_shell_on_all_hosts(lab: Lab) -> None:
    res = subprocess.run(
        [str(PYINFRA), ",".join(h.address for h in lab.hosts), "-y",
         "--user", "root", "--key", str(lab.key),
         "--data", f"ssh_known_hosts_file={lab.known_hosts}",
         "--data", "ssh_strict_host_key_checking=yes",
         "server.shell", "commands=touch /root/pyinfra-was-here"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    for host in lab.hosts:
        assert ssh(lab, host, "test -e /root/pyinfra-was-here").returncode == 0


def test_cli_lab_status_shows_the_hosts(lab: Lab) -> None:
    """`gpufleet lab`, from the gpufleet-lab distribution's entry point."""
    out, err = io.StringIO(), io.StringIO()
    cfg = lab.config
    argv = ["lab", "status", "--prefix", cfg.prefix, "--net", cfg.net]
    rc = gpufleet.cli.main(argv, Environment(stdout=out, stderr=err, width=120))
    assert rc == 0, err.getvalue()
    rows = [ln for ln in out.getvalue().splitlines() if cfg.prefix in ln and "running" in ln]
    assert len(rows) == 3 and all("yes" in r for r in rows), out.getvalue()


def test_down_after_a_crash_leaves_nothing(crash_lab_config: LabConfig, tmp_path: Path) -> None:
    """A second lab, SIGKILLed (launchers, nspawn, mirror) and its state dir deleted: `down`
    must still find and remove every process, mount, netns, link and cgroup by name."""
    cfg = crash_lab_config
    labmod.down(cfg)
    labmod.up(cfg, 2)
    for pid in procs.launcher_pids(cfg) + procs.nspawn_pids(cfg) + labmod.mirror.server_pids(cfg):
        procs.signal_all([pid], signal.SIGKILL)
    for name in ("lab.json", "known_hosts", "ssh_config", "www"):
        subprocess.run(["rm", "-rf", str(cfg.run_dir / name)], check=True)
    # `down` must not need the state dir: point it elsewhere, so only names can find things.
    labmod.down(dataclasses.replace(cfg, state_dir=tmp_path / "lost"))
    mounts = Path("/proc/mounts").read_text()
    assert f"gpufleet-lab-{cfg.prefix}" not in mounts and str(cfg.run_dir) + "/" not in mounts
    assert not [n for n in _netns() if n.startswith(cfg.prefix)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not re.search(rf"^\d+: {cfg.prefix}", links, re.M)
    assert not procs.nspawn_pids(cfg) and not procs.launcher_pids(cfg)
    assert not labmod.mirror.server_pids(cfg)
    assert not procs.lab_cgroup_roots(cfg)
    assert _eventually(lambda: not _guest_processes(cfg), 5)
    labmod.down(cfg)  # now with the real state dir: removes the orphaned upper dirs
    assert not cfg.host_dir(cfg.host_name(1)).exists()


def _guest_processes(cfg: LabConfig) -> list[int]:
    """Processes whose hostname (UTS namespace) is one of the lab's hosts."""
    found = []
    for pid, _ in procs.iter_procs():
        try:
            uts = Path(f"/proc/{pid}/root/etc/hostname").read_text().strip()
        except OSError:
            continue
        if cfg.is_host_name(uts):
            found.append(pid)
    return found


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.strip()]


def _known_key(lab: Lab, name: str) -> str:
    for line in lab.known_hosts.read_text().splitlines():
        names, key = line.split(" ", 1)
        if name in names.split(","):
            return key
    raise AssertionError(f"{name} not in {lab.known_hosts}")


def _eventually(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def _tiny_wheel(name: str, version: str) -> bytes:
    """A minimal valid pure-Python wheel (PEP 427) with one module."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "OK = 'probe-ok'\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: gpufleet-lab\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr(f"{dist}/RECORD", "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n")
    return buf.getvalue()
