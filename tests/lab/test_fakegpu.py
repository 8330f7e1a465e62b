"""gpufleet_lab.fakegpu: the emulated amdgpu/KFD tree and the VRAM claim API, in a tmp root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpufleet_lab import fakegpu

GIB = 1 << 30
SCRIPT = Path(fakegpu.__file__)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "run/fakegpu"
    fakegpu.build_tree(root, 8, "mi300x")
    return root


@pytest.fixture
def sleeper():
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        procs.append(subprocess.Popen(["sleep", "60"]))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _used(base: Path, index: int) -> int:
    card = fakegpu.load_cards(base)[index]
    return int((Path(card.device_dir) / "mem_info_vram_used").read_text())


def _wait_for(check, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_tree_has_eight_mi300x_with_exact_totals(base: Path) -> None:
    cards = fakegpu.load_cards(base)
    assert [c.bdf for c in cards][:3] == ["0000:05:00.0", "0000:26:00.0", "0000:46:00.0"]
    assert len({c.gpu_id for c in cards}) == 8
    for card in cards:
        dev = base / "class/drm" / f"card{card.index}" / "device"
        assert dev.resolve() == Path(card.device_dir).resolve()
        assert (dev / "vendor").read_text() == "0x1002\n"
        assert (dev / "device").read_text() == "0x74a1\n"
        assert (dev / "mem_info_vram_total").read_text() == "206141652992\n"
        assert (dev / "vbios_version").is_file()


def test_kfd_topology_cpu_nodes_first_then_gpus_matched_by_location(base: Path) -> None:
    nodes = base / "class/kfd/kfd/topology/nodes"
    assert sorted(int(n.name) for n in nodes.iterdir()) == list(range(10))
    assert (nodes / "0/gpu_id").read_text() == "0\n"
    for node in nodes.iterdir():  # rocm_smi_lib asserts on a missing link dir
        assert (node / "io_links").is_dir() and (node / "p2p_links").is_dir()
    card = fakegpu.load_cards(base)[1]  # 0000:26:00.0 -> bus 0x26 << 8
    props = (nodes / str(card.node) / "properties").read_text()
    assert "location_id 9728\n" in props and "domain 0\n" in props
    assert (nodes / str(card.node) / "gpu_id").read_text() == f"{card.gpu_id}\n"
    assert (base / "module/amdgpu/initstate").read_text() == "live\n"


def test_claims_add_up_per_card_and_appear_in_kfd_proc(base: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    idle = fakegpu.KINDS["mi300x"].idle_bytes
    a, b = sleeper(), sleeper()
    fakegpu.claim(a.pid, {0: 40 * GIB, 1: 40 * GIB}, base)
    fakegpu.claim(b.pid, {0: 10 * GIB}, base)
    assert _used(base, 0) == idle + 50 * GIB
    assert _used(base, 1) == idle + 40 * GIB
    assert _used(base, 2) == idle
    card0, card5 = fakegpu.load_cards(base)[0], fakegpu.load_cards(base)[5]
    proc = base / "class/kfd/kfd/proc" / str(a.pid)
    assert (proc / f"vram_{card0.gpu_id}").read_text() == f"{40 * GIB}\n"
    assert (proc / f"vram_{card5.gpu_id}").read_text() == "0\n"  # every GPU, as amdkfd
    assert sorted(q.name for q in (proc / "queues").iterdir()) == ["1", "2"]


def test_claim_replaces_the_previous_one_and_release_frees_it(base: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    idle = fakegpu.KINDS["mi300x"].idle_bytes
    p = sleeper()
    fakegpu.claim(p.pid, {3: 5 * GIB}, base)
    fakegpu.claim(p.pid, {3: 7 * GIB}, base)
    assert _used(base, 3) == idle + 7 * GIB
    fakegpu.release(p.pid, base)
    assert _used(base, 3) == idle
    assert not (base / "class/kfd/kfd/proc" / str(p.pid)).exists()


def test_claim_beyond_free_memory_is_refused(base: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    a, b = sleeper(), sleeper()
    fakegpu.claim(a.pid, {0: 150 * GIB}, base)
    with pytest.raises(fakegpu.OutOfMemory) as err:
        fakegpu.claim(b.pid, {0: 50 * GIB}, base)
    assert err.value.index == 0 and err.value.free < 50 * GIB
    assert not (base / "claims" / f"{b.pid}.json").exists()


def test_killed_process_is_released_by_the_next_reconcile(base: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    p = sleeper()
    fakegpu.claim(p.pid, {0: 20 * GIB}, base)
    p.kill()  # a zombie until reaped: the driver frees at exit, so must we
    idle = fakegpu.KINDS["mi300x"].idle_bytes
    assert _wait_for(lambda: fakegpu.reconcile(base)[0].used_bytes == idle, timeout=1.0)
    assert list((base / "claims").iterdir()) == []
    assert p.poll() is not None  # reaped only now: the zombie was already counted as gone


def test_reused_pid_does_not_inherit_a_claim(base: Path) -> None:
    record = {"pid": os.getpid(), "start": 1, "gpus": {"0": GIB}}  # our pid, another start time
    (base / "claims" / f"{os.getpid()}.json").write_text(json.dumps(record))
    assert fakegpu.reconcile(base)[0].used_bytes == fakegpu.KINDS["mi300x"].idle_bytes


def test_daemon_sweeps_a_sigkilled_process_within_two_seconds(tmp_path: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    daemon = subprocess.Popen([sys.executable, str(SCRIPT), "run", "--gpus", "2",
                               "--root", str(tmp_path), "--no-mount"])
    base = tmp_path / "run/fakegpu"
    try:
        assert _wait_for(lambda: (base / "cards.json").exists())
        p = sleeper()
        fakegpu.claim(p.pid, {1: 30 * GIB}, base)
        os.kill(p.pid, signal.SIGKILL)
        idle = fakegpu.KINDS["mi300x"].idle_bytes
        assert _wait_for(lambda: _used(base, 1) == idle, timeout=2.0)
    finally:
        daemon.terminate()
        daemon.wait()


def test_install_into_an_image_writes_tree_and_enabled_unit(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "install", "--gpus", "4", "--root",
                    str(tmp_path)], check=True)
    unit = tmp_path / "etc/systemd/system/fakegpu.service"
    assert "run --gpus 4 --model mi300x" in unit.read_text()
    assert (tmp_path / "etc/systemd/system/multi-user.target.wants/fakegpu.service").is_symlink()
    assert len(fakegpu.load_cards(tmp_path / "run/fakegpu")) == 4
    status = subprocess.run([sys.executable, str(SCRIPT), "status"], capture_output=True,
                            text=True, env={**os.environ, "GPUFLEET_FAKEGPU_ROOT":
                                            str(tmp_path / "run/fakegpu")}, check=True)
    assert "0000:65:00.0" in status.stdout and "206141652992" in status.stdout


ROCM_SMI = """
import json, subprocess, sys
sys.path.insert(0, {lab!r})
import fakegpu
from pathlib import Path
fakegpu.mount(Path({base!r}))
out = {{}}
for flags in (["--showmeminfo", "vram"], ["--showpids"]):
    run = subprocess.run(["rocm-smi", *flags, "--json"], capture_output=True, text=True)
    out[flags[0]] = json.loads(run.stdout)
print(json.dumps(out))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("rocm-smi") or not shutil.which("unshare"),
    reason="needs root, unshare and Debian's rocm-smi (apt-get install rocm-smi)",
)
def test_real_rocm_smi_reads_the_tree_in_a_private_mount_namespace(base: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    p = sleeper()
    fakegpu.claim(p.pid, {2: 12 * GIB}, base)
    code = ROCM_SMI.format(lab=str(SCRIPT.parent), base=str(base))
    run = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                          code], capture_output=True, text=True, timeout=60, check=True)
    out = json.loads(run.stdout)
    meminfo = out["--showmeminfo"]
    assert meminfo["card0"]["VRAM Total Memory (B)"] == "206141652992"
    idle = fakegpu.KINDS["mi300x"].idle_bytes
    assert meminfo["card2"]["VRAM Total Used Memory (B)"] == str(idle + 12 * GIB)
    assert out["--showpids"]["system"][f"PID{p.pid}"] == f"sleep, 1, {12 * GIB}, 0, 0"
