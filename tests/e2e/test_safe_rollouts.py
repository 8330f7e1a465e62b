"""End-to-end: rollouts that never half-write a host, never run twice at once, and a no-op that
touches nothing — on the lab's real hosts (sshd, systemd, pyinfra), asserted on the hosts.

What stands in: the emulated GPUs and the vllm-test-double, as in test_fleet.py. The tests run
in file order on one lab; each starts from the converged fleet the previous one left.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import REPO
from test_fleet import SERVICES, deploy, edit, hosts, service, sh, units

from gpufleet import inventory
from gpufleet.deploy import FleetDeploy, SshOverride, host_targets
from gpufleet.plan import build_plan
from gpufleet_lab import Lab
from gpufleet_lab.fleet import write_lab_fleet
from gpufleet_lab.hosts import exec_in

MANAGED = "/etc/systemd/system/gpufleet-*.service /etc/systemd/system/gpufleet.target " \
          "/etc/gpufleet/*.env /etc/gpufleet/plan.json"


@pytest.fixture(scope="module")
def inv(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_lab_fleet(lab, tmp_path_factory.mktemp("safety") / "lab.yml")
    result = deploy(path)  # converge from whatever the previous module left
    assert result.exit_status == 0, result.stdout + result.stderr
    return path


def hashes(lab: Lab, host: str) -> dict[str, str]:
    """path -> sha256 of every gpufleet file on the host."""
    out = sh(lab, host, f"sha256sum {MANAGED} 2>/dev/null")
    return {line.split()[1]: line.split()[0] for line in out.splitlines() if line.strip()}


def change_times(lab: Lab, host: str) -> dict[str, str]:
    out = sh(lab, host, f"stat -c '%n %Z' {MANAGED} /etc/gpufleet 2>/dev/null")
    return dict(line.split() for line in out.splitlines() if line.strip())


def pids(lab: Lab) -> dict[str, dict[str, tuple[str, str]]]:
    return {h: {n: (u["MainPID"], u["ExecMainStartTimestamp"]) for n, u in units(lab, h).items()}
            for h in hosts(lab)}


def cli(*args: str) -> subprocess.Popen[str]:
    """`gpufleet ARGS` as its own process (a second controller run, killable)."""
    return subprocess.Popen([sys.executable, "-m", "gpufleet.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def await_lock(lab: Lab, run: subprocess.Popen[str]) -> None:
    """Until `run` holds the first host's lock (it took the inventory's lock before)."""
    deadline = time.monotonic() + 60
    while f'"pid": {run.pid}' not in sh(lab, hosts(lab)[0], "cat /run/gpufleet/deploy.lock"):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the first run never took the host lock"
        time.sleep(0.1)


def deploy_json(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = deploy(path, "--json", *args)
    return result.exit_status, json.loads(result.stdout)


# ---------------------------------------------------------------- a true no-op


def test_noop_changes_nothing_and_says_so(lab: Lab, inv: Path) -> None:
    before = pids(lab)
    stamps = {h: change_times(lab, h) for h in hosts(lab)}
    status, report = deploy_json(inv)
    assert status == 0, report
    assert [h["status"] for h in report["hosts"]] == ["unchanged"] * len(lab.hosts)
    assert all(h["changes"] == [] and h["services"] == [] and h["steps"] == []
               for h in report["hosts"])
    assert report["validation"] is None  # nothing was applied, so nothing of this run to check
    assert pids(lab) == before  # zero restarts: MainPID and start time
    assert {h: change_times(lab, h) for h in hosts(lab)} == stamps  # zero writes
    dry = deploy(inv, "--dry-run")
    assert dry.exit_status == 0
    assert dry.stdout.count("no changes") == len(lab.hosts)
    assert "will change" not in dry.stdout


def test_survey_agrees_with_pyinfra_on_a_converged_host(lab: Lab, inv: Path) -> None:
    """The survey says 'converged' only where pyinfra, asked for every step, changes nothing."""
    plan = build_plan(inventory.load(inv))
    fleet = plan.inventory.fleet
    run = FleetDeploy(host_targets(plan), ssh=SshOverride(key=fleet.ssh_key,
                                                          known_hosts=fleet.ssh_known_hosts))
    try:
        run.connect()
        surveys = run.survey()
        reports = run.prepare(diff=True)  # all steps: no limit from the survey
    finally:
        run.close()
    for name in hosts(lab):
        assert surveys[name].converged, surveys[name].differences
        assert reports[name].ok and reports[name].changes == [] and reports[name].files == []


def test_survey_sees_a_hand_edit(lab: Lab, inv: Path) -> None:
    host = hosts(lab)[1]
    sh(lab, host, "chmod 644 /etc/gpufleet/tiny.env")
    before = pids(lab)
    status, report = deploy_json(inv)
    assert status == 0, report
    row = {h["name"]: h for h in report["hosts"]}
    assert row[host]["status"] == "updated" and row[host]["steps"] == ["services"]
    assert sh(lab, host, "stat -c %a /etc/gpufleet/tiny.env").strip() == "600"
    after = pids(lab)
    changed = {(h, n) for h in after for n in after[h] if after[h][n] != before[h][n]}
    assert changed <= {(host, "tiny")}  # only the owner of the fixed file, if anything


# ---------------------------------------------------------------- the lock


def test_two_deploys_at_once_one_runs_the_other_refuses(lab: Lab, inv: Path) -> None:
    edit(inv, lambda d: [service(d, h, "tiny").update(max_model_len=1536) for h in d["hosts"]])
    first = cli("deploy", str(inv), "--json")
    await_lock(lab, first)
    started = time.monotonic()
    second = cli("deploy", str(inv), "--json")
    out2, err2 = second.communicate(timeout=60)
    refused_after = time.monotonic() - started
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 2, out2 + err2
    assert refused_after < 3.0  # at once (process start included)
    said = " ".join(err2.split())  # the message as one line, whatever the terminal's width
    assert "is being deployed by" in said and f"pid {first.pid}," in said
    refused = json.loads(out2)
    assert {h["status"] for h in refused["hosts"]} == {"locked"}
    assert "updated" not in out2 and not any(h["services"] for h in refused["hosts"])
    assert [h["status"] for h in json.loads(out1)["hosts"]] == ["updated"] * len(lab.hosts)


def test_a_second_controller_is_refused_by_the_host_lock(lab: Lab, inv: Path,
                                                          tmp_path: Path) -> None:
    """Another inventory file (another controller's copy): the hosts' own locks refuse it."""
    other = tmp_path / "copy.yml"
    edit(inv, lambda d: [service(d, h, "tiny").update(max_model_len=2048) for h in d["hosts"]])
    other.write_text(inv.read_text())
    first = cli("deploy", str(inv), "--json")
    await_lock(lab, first)
    second = cli("deploy", str(other), "--json")
    out2, err2 = second.communicate(timeout=60)
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 2, out2 + err2
    rows = json.loads(out2)["hosts"]
    assert {h["status"] for h in rows} == {"locked"}
    assert all(f"pid {first.pid}" in (h["error"] or "") for h in rows)


def test_wait_runs_after_the_holder_and_finds_nothing_to_do(lab: Lab, inv: Path) -> None:
    edit(inv, lambda d: [service(d, h, "tiny").update(max_model_len=1536) for h in d["hosts"]])
    first = cli("deploy", str(inv), "--json")
    await_lock(lab, first)
    second = cli("deploy", str(inv), "--json", "--wait", "300")
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, out1 + err1 + out2 + err2
    assert [h["status"] for h in json.loads(out2)["hosts"]] == ["unchanged"] * len(lab.hosts)


# ---------------------------------------------------------------- atomic writes


def test_disk_full_leaves_every_file_and_service_as_it_was(lab: Lab, inv: Path) -> None:
    host = hosts(lab)[0]
    fill = ("mkdir -p /root/gf-bak && cp -a /etc/gpufleet/. /root/gf-bak/ && "
            "mount -t tmpfs -o size=256k gpufleet-full /etc/gpufleet && "
            "cp -a /root/gf-bak/. /etc/gpufleet/ && "
            "{ dd if=/dev/zero of=/etc/gpufleet/.filler bs=4k 2>/dev/null; true; }")
    assert exec_in(lab.config, host, fill).returncode == 0
    try:
        files_before, before = hashes(lab, host), pids(lab)
        edit(inv, lambda d: [service(d, h, "chat")["env"].update(VLLM_LOGGING_LEVEL="INFO")
                             for h in d["hosts"]])
        status, report = deploy_json(inv)
        row = {h["name"]: h for h in report["hosts"]}[host]
        assert status == 1
        assert row["status"] == "failed"
        assert f"host {host}: no space left on /etc/gpufleet (needs" in row["error"]
        assert hashes(lab, host) == files_before  # byte-identical
        assert pids(lab) == before  # services untouched, on every host
        exec_in(lab.config, host, "rm -f /etc/gpufleet/.filler")
        status, report = deploy_json(inv)  # space freed: the next deploy converges
        assert status == 0, report
        assert "VLLM_LOGGING_LEVEL=INFO" in sh(lab, host, "cat /etc/gpufleet/chat.env")
    finally:
        exec_in(lab.config, host, "mkdir -p /root/gf-new && cp -a /etc/gpufleet/. /root/gf-new/"
                " && umount /etc/gpufleet && cp -a /root/gf-new/. /etc/gpufleet/; "
                "rm -rf /root/gf-new /root/gf-bak /etc/gpufleet/.filler")


def test_controller_killed_mid_upload_leaves_old_or_new(lab: Lab, inv: Path) -> None:
    """A ~120 KB env file (4 variables of 30,000 bytes: env values are capped at 32 KiB) over a
    link throttled to 64 kbit/s: the upload takes seconds, and the controller is SIGKILLed once
    the temp file holds part of it. The destination keeps its old bytes; the kernel releases the
    dead run's lock, so the next run converges at once."""
    host = hosts(lab)[0]
    old = sh(lab, host, "sha256sum /etc/gpufleet/embed.env").split()[0]
    pads = {f"GPUFLEET_TEST_PADDING_{i}": "x" * 30_000 for i in range(4)}
    edit(inv, lambda d: [service(d, h, "embed")["env"].update(pads) for h in d["hosts"]])
    link, temp = f"{host}-h", "/etc/gpufleet/.embed.env.gpufleet-new"
    subprocess.run(["tc", "qdisc", "add", "dev", link, "root", "tbf", "rate", "64kbit",
                    "burst", "4kb", "latency", "10s"], check=True)
    try:
        run = cli("deploy", str(inv))
        size, deadline = 0, time.monotonic() + 120
        while size == 0:  # the first chunks have landed in the temp file
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the upload never started"
            out = exec_in(lab.config, host, f"stat -c %s {temp} 2>/dev/null").stdout.strip()
            size = int(out or 0)
            time.sleep(0.05)
        os.kill(run.pid, signal.SIGKILL)
        run.communicate()
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], check=False)
    assert sh(lab, host, "sha256sum /etc/gpufleet/embed.env").split()[0] == old
    # what landed stays aside under the temporary name (a partial, or all of it when the kill
    # came between the last write and the rename): the file itself kept its old bytes
    assert int(sh(lab, host, f"stat -c %s {temp}").strip()) > 0
    status, report = deploy_json(inv)  # no stale lock: it runs, and converges
    assert status == 0, report
    assert sh(lab, host, "grep -c '^GPUFLEET_TEST_PADDING_' /etc/gpufleet/embed.env").strip() \
        == "4"
    edit(inv, lambda d: [service(d, h, "embed")["env"].pop(k) for h in d["hosts"] for k in pads])
    assert deploy(inv).exit_status == 0


def test_a_new_secret_file_is_never_wider_than_0600(lab: Lab, inv: Path) -> None:
    """A new service with an API key: a watcher on the host stats its env file (and the temp
    name it is written under) in a tight loop, from before the deploy until after it."""
    host = hosts(lab)[0]
    watch = ("import os, time, sys\n"
             "seen, names, end = set(), ('.embed2.env.gpufleet-new', 'embed2.env'), "
             "time.time() + float(sys.argv[1])\n"
             "while time.time() < end and not os.path.exists('/root/watch.stop'):\n"
             "    for n in names:\n"
             "        try: seen.add((n, oct(os.stat('/etc/gpufleet/' + n).st_mode & 0o777)))\n"
             "        except FileNotFoundError: pass\n"
             "print(sorted(seen))\n")
    exec_in(lab.config, host, f"rm -f /root/watch.stop; cat > /root/watch.py <<'EOF'\n{watch}EOF")
    watcher = subprocess.Popen(
        ["nsenter", "-t", str(_pid1(lab, host)), "-a", "python3", "/root/watch.py", "60"],
        stdout=subprocess.PIPE, text=True)

    def add(d: dict[str, Any]) -> None:
        for h in d["hosts"]:
            extra = dict(service(d, h, "embed"), name="embed2", port=8002, gpus=[1],
                         secrets={"VLLM_API_KEY": "api_key"})
            d["hosts"][h]["services"].append(extra)

    time.sleep(1)
    edit(inv, add)
    try:
        result = deploy(inv)
        assert result.exit_status == 0, result.stdout + result.stderr
        exec_in(lab.config, host, "touch /root/watch.stop")
        seen = ast.literal_eval(watcher.communicate(timeout=30)[0] or "[]")
    finally:
        watcher.kill()
        edit(inv, lambda d: [d["hosts"][h]["services"].pop() for h in d["hosts"]])
    assert ("embed2.env", "0o600") in seen
    assert all(mode == "0o600" for _, mode in seen), seen


def _pid1(lab: Lab, host: str) -> int:
    from gpufleet_lab import procs

    pid = procs.guest_init_pid(lab.config, host)
    assert pid is not None
    return pid


# ---------------------------------------------------------------- honest reports


def test_unreachable_host_names_the_connection_error(lab: Lab, inv: Path) -> None:
    assert deploy(inv).exit_status == 0  # back to the converged fleet (embed2 retired)
    host = hosts(lab)[-1]
    exec_in(lab.config, host, "systemctl stop ssh.socket ssh.service sshd.service 2>/dev/null;"
                              " true")
    try:
        status, report = deploy_json(inv)
    finally:
        exec_in(lab.config, host, "systemctl start ssh.service || systemctl start sshd.service")
    row = {h["name"]: h for h in report["hosts"]}
    assert status == 1
    assert row[host]["status"] == "failed"
    assert "cannot connect to port 22: Connection refused" in row[host]["error"]
    assert all(row[h]["status"] == "unchanged" for h in hosts(lab)[:-1])
    for name in SERVICES:
        assert units(lab, host)[name]["ActiveState"] == "active"
