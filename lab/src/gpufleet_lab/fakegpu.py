#!/usr/bin/env python3
"""fakegpu: emulated AMD Instinct GPUs for lab hosts (stdlib only, runs as root in the host).

It writes an amdgpu/KFD sysfs tree under /run/fakegpu and lays it over the real sysfs with a
read-only overlay on /sys/class and /sys/module, so Debian's real `rocm-smi` (5.2.3) reports the
emulated cards. Memory in use follows processes: a process claims VRAM with `claim()`; claims of
dead processes are dropped by `reconcile()` (run on every claim and every second by the daemon),
which rewrites `mem_info_vram_used` and the per-process KFD entries `rocm-smi --showpids` reads.

    python3 fakegpu.py install --gpus 8 --model mi300x [--root /]   # tree, mounts, fakegpu.service
    python3 fakegpu.py status
    python3 fakegpu.py run --gpus 8 --model mi300x                   # what fakegpu.service runs

`GPUFLEET_FAKEGPU_ROOT` points the claim API at another tree (tests); default /run/fakegpu.
Files that change are reached through absolute symlinks (class/drm/cardN, class/kfd/kfd), never
through overlayfs itself, so updates are seen at once and no stale overlay dentry hides them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

DEFAULT_BASE = "/run/fakegpu"
ROOT_ENV = "GPUFLEET_FAKEGPU_ROOT"
UNIT_NAME = "fakegpu.service"
INSTALL_DIR = "usr/local/lib/gpufleet-lab"  # where lab/hosts.py copies this script
SWEEP_SECONDS = 0.5  # a SIGKILLed process frees its memory within ~1 s, as with the real driver
PCI_PARENT = "pci0000:00/0000:00:01.1"
CPU_NODES = 2  # a two-socket host: KFD nodes 0 and 1 are CPUs, GPUs start at node 2


@dataclass(frozen=True)
class GpuKind:
    """One emulated product: what its sysfs files say."""

    device_id: str
    total_bytes: int
    idle_bytes: int  # used by the driver on an idle card
    vbios: str
    product_name: str
    product_number: str
    bdfs: tuple[str, ...]
    power_cap_w: int
    gfx_target_version: int


# MI300X: total as hipMemGetInfo/rocm-smi report it (not 192 GiB); idle use as seen on MI308X
# boxes (rocm-smi, ROCm 7.2); BDFs as on 8x MI300X OAM platforms.
KINDS: dict[str, GpuKind] = {
    "mi300x": GpuKind(
        device_id="0x74a1",
        total_bytes=206_141_652_992,
        idle_bytes=297_623_552,
        vbios="113-M3000100-103",
        product_name="AMD Instinct MI300X OAM",
        product_number="102-G30211-00",
        bdfs=(
            "0000:05:00.0",
            "0000:26:00.0",
            "0000:46:00.0",
            "0000:65:00.0",
            "0000:85:00.0",
            "0000:a6:00.0",
            "0000:c6:00.0",
            "0000:e5:00.0",
        ),
        power_cap_w=750,
        gfx_target_version=90402,
    ),
}


@dataclass(frozen=True)
class Card:
    """One emulated GPU: its rocm-smi index, PCI address, KFD ids and memory."""

    index: int
    bdf: str
    gpu_id: int
    node: int
    numa: int
    total_bytes: int
    idle_bytes: int
    device_dir: str  # absolute path of its PCI device directory


@dataclass(frozen=True)
class GpuState:
    """A card as a process sees it now: total and used VRAM (sysfs mem_info_vram_*)."""

    index: int
    bdf: str
    gpu_id: int
    total_bytes: int
    used_bytes: int

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes


class Claim(TypedDict):
    """claims/<pid>.json: what one process holds, by card index (as a string: JSON keys)."""

    pid: int
    start: int | None  # /proc start time, so a reused pid does not inherit the claim
    gpus: dict[str, int]


class OutOfMemory(Exception):
    """A claim larger than what is free on a card (hipMalloc would fail the same way)."""

    def __init__(self, index: int, requested: int, free: int, total: int):
        super().__init__(
            f"GPU {index}: tried to allocate {requested} B with {free} B free of {total} B"
        )
        self.index, self.requested, self.free, self.total = index, requested, free, total


# ---------------------------------------------------------------- paths


def base_dir(base: str | os.PathLike[str] | None = None) -> Path:
    """Where the tree lives: the argument, else $GPUFLEET_FAKEGPU_ROOT, else /run/fakegpu."""
    return Path(base or os.environ.get(ROOT_ENV) or DEFAULT_BASE)


def kfd_dir(base: Path) -> Path:
    return base / "devices/virtual/kfd/kfd"


def _write(path: Path, text: str) -> None:
    """Atomic replace: readers never see a half-written value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _link(path: Path, target: str | Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    path.symlink_to(target)


# ---------------------------------------------------------------- the tree


def plan_cards(base: Path, count: int, model: str) -> list[Card]:
    """The cards of one host: BDFs in slot order, half on each NUMA node, stable KFD gpu_ids."""
    kind = KINDS[model]
    if not 1 <= count <= len(kind.bdfs):
        raise ValueError(f"{model}: --gpus must be 1..{len(kind.bdfs)}, not {count}")
    cards, seen = [], set()
    for i, bdf in enumerate(kind.bdfs[:count]):
        gpu_id = 1000 + zlib.crc32(f"{model}/{bdf}".encode()) % 64000
        while gpu_id in seen:  # KFD gpu_ids are unique per host
            gpu_id += 1
        seen.add(gpu_id)
        device_dir = base / "devices" / PCI_PARENT / bdf
        numa = 0 if i < (count + 1) // 2 else 1
        cards.append(
            Card(
                i,
                bdf,
                gpu_id,
                CPU_NODES + i,
                numa,
                kind.total_bytes,
                kind.idle_bytes,
                str(device_dir),
            )
        )
    return cards


def build_tree(base: Path, count: int, model: str) -> list[Card]:
    """Write the static tree (idempotent: live claims and KFD process entries survive)."""
    kind = KINDS[model]
    cards = plan_cards(base, count, model)
    for stale in ("class", "devices/" + PCI_PARENT, "devices/virtual/kfd/kfd/topology"):
        shutil.rmtree(base / stale, ignore_errors=True)
    for card in cards:
        _write_card(base, card, kind)
        _write_kfd_node(base, card, kind, cards)
    for node in range(CPU_NODES):
        _write_cpu_node(base, node)
    topology = kfd_dir(base) / "topology"
    _write(topology / "generation_id", "1\n")
    _write(topology / "system_properties", "platform_oem 0\nplatform_id 0\nplatform_rev 0\n")
    (kfd_dir(base) / "proc").mkdir(parents=True, exist_ok=True)
    _link(base / "class/kfd/kfd", kfd_dir(base))
    _write(base / "module/amdgpu/initstate", "live\n")
    _write(base / "module/amdgpu/version", "6.10.5\n")
    (base / "claims").mkdir(parents=True, exist_ok=True)
    _write(base / "cards.json", json.dumps([asdict(c) for c in cards], indent=1) + "\n")
    reconcile(base)
    return cards


def _device_files(card: Card, kind: GpuKind) -> dict[str, str]:
    """The amdgpu files rocm_smi_lib reads under device/ (values of an idle MI300X)."""
    digest = zlib.crc32(card.bdf.encode()) ^ zlib.crc32(kind.device_id.encode())
    return {
        "vendor": "0x1002",
        "device": kind.device_id,
        "revision": "0x00",
        "subsystem_vendor": "0x1002",
        "subsystem_device": kind.device_id,
        "class": "0x120000",
        "numa_node": str(card.numa),
        "vbios_version": kind.vbios,
        "product_name": kind.product_name,
        "product_number": kind.product_number,
        "serial_number": f"69235100{card.gpu_id:05d}",
        "unique_id": f"{digest:08x}{card.gpu_id:08x}",
        "mem_info_vram_total": str(card.total_bytes),
        "mem_info_vram_used": str(card.idle_bytes),
        "mem_info_vis_vram_total": str(card.total_bytes),
        "mem_info_vis_vram_used": str(card.idle_bytes),
        "mem_info_gtt_total": str(128 * 1024**3),
        "mem_info_gtt_used": str(11 * 1024**2),
        "mem_info_vram_vendor": "hynix",
        "gpu_busy_percent": "0",
        "mem_busy_percent": "0",
        "pp_dpm_sclk": "0: 500Mhz *\n1: 1300Mhz\n2: 2100Mhz",
        "pp_dpm_mclk": "0: 900Mhz\n1: 1300Mhz *",
        "pp_dpm_fclk": "0: 1200Mhz *\n1: 1600Mhz",
        "pp_dpm_socclk": "0: 28Mhz *\n1: 1143Mhz",
        "pp_dpm_dcefclk": "0: 0Mhz *",
        "pp_dpm_pcie": "0: 32.0GT/s, x16 1619Mhz *",
        "power_dpm_force_performance_level": "auto",
        "pp_sclk_od": "0",
        "pp_mclk_od": "0",
        "pp_od_clk_voltage": "OD_SCLK:\n0: 500Mhz\n1: 2100Mhz\nOD_MCLK:\n1: 1300Mhz",
        "pp_power_profile_mode": "",
        "pcie_bw": "0 0 256",
        "pcie_replay_count": "0",
        "current_link_speed": "32.0 GT/s PCIe",
        "current_link_width": "16",
        "current_compute_partition": "SPX",
        "current_memory_partition": "NPS1",
    }


def _hwmon_files(card: Card, kind: GpuKind) -> dict[str, str]:
    """MI300X has no edge sensor: junction and memory only (so 5.2.3's concise Temp is N/A)."""
    return {
        "name": "amdgpu",
        "temp2_input": str(35000 + 1000 * (card.index % 4)),
        "temp2_label": "junction",
        "temp3_input": str(33000 + 1000 * (card.index % 3)),
        "temp3_label": "mem",
        "power1_average": str((130 + card.index) * 1_000_000),
        "power1_cap": str(kind.power_cap_w * 1_000_000),
        "power1_cap_max": str(kind.power_cap_w * 1_000_000),
        "power1_cap_min": "0",
        "in0_input": "781",
        "in0_label": "vddgfx",
    }


def _write_card(base: Path, card: Card, kind: GpuKind) -> None:
    dev = Path(card.device_dir)
    for name, value in _device_files(card, kind).items():
        _write(dev / name, value + "\n")
    for minor, name in (
        (card.index, f"card{card.index}"),
        (128 + card.index, f"renderD{128 + card.index}"),
    ):
        _write(dev / "drm" / name / "dev", f"226:{minor}\n")
        _link(dev / "drm" / name / "device", f"../../../{card.bdf}")
        _link(base / "class/drm" / name, dev / "drm" / name)  # absolute: readable through /sys
    hwmon = dev / "hwmon" / f"hwmon{card.index}"
    for name, value in _hwmon_files(card, kind).items():
        _write(hwmon / name, value + "\n")
    _link(hwmon / "device", f"../../../{card.bdf}")
    _link(base / "class/hwmon" / f"hwmon{card.index}", hwmon)


def _location_id(bdf: str) -> int:
    bus, devfn = bdf.split(":")[1:]
    dev, fn = devfn.split(".")
    return int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn, 16)


def _write_kfd_node(base: Path, card: Card, kind: GpuKind, cards: list[Card]) -> None:
    node = kfd_dir(base) / "topology/nodes" / str(card.node)
    props = {
        "cpu_cores_count": 0,
        "simd_count": 1216,
        "mem_banks_count": 1,
        "caches_count": 0,
        "io_links_count": len(cards),
        "p2p_links_count": 0,
        "cpu_core_id_base": 0,
        "simd_id_base": 2147487744 + 1024 * card.index,
        "max_waves_per_simd": 8,
        "lds_size_in_kb": 64,
        "gds_size_in_kb": 0,
        "num_gws": 64,
        "wave_front_size": 64,
        "array_count": 32,
        "simd_arrays_per_engine": 1,
        "cu_per_simd_array": 10,
        "simd_per_cu": 4,
        "max_slots_scratch_cu": 32,
        "gfx_target_version": kind.gfx_target_version,
        "vendor_id": 0x1002,
        "device_id": int(kind.device_id, 16),
        "location_id": _location_id(card.bdf),
        "domain": int(card.bdf.split(":")[0], 16),
        "drm_render_minor": 128 + card.index,
        "hive_id": 0x5A8F3C2D1E0B4A69,
        "num_sdma_engines": 2,
        "num_sdma_xgmi_engines": 14,
        "num_sdma_queues_per_engine": 8,
        "num_cp_queues": 24,
        "max_engine_clk_fcompute": 2100,
        "local_mem_size": 0,
        "fw_version": 159,
        "capability": 746062464,
        "debug_prop": 1495,
        "sdma_fw_version": 19,
        "unique_id": card.gpu_id,
        "num_xcc": 8,
        "max_engine_clk_ccompute": 3250,
    }
    _write(node / "properties", "".join(f"{k} {v}\n" for k, v in props.items()))
    _write(node / "gpu_id", f"{card.gpu_id}\n")
    _write(node / "name", "ip discovery\n")
    _write(node / "mem_banks/0/properties", f"heap_type 1\nsize_in_bytes {card.total_bytes}\n")
    (node / "p2p_links").mkdir(parents=True, exist_ok=True)
    links = [(card.numa, 2, 20, 0)] + [(o.node, 11, 15, 50000) for o in cards if o != card]
    for i, (to, link_type, weight, bandwidth) in enumerate(links):
        _write(
            node / "io_links" / str(i) / "properties",
            _link_props(card.node, to, link_type, weight, bandwidth),
        )


def _link_props(frm: int, to: int, link_type: int, weight: int, bandwidth: int) -> str:
    """One KFD io_link: type 2 = PCIe to the CPU, 11 = XGMI between GPUs."""
    return (
        f"type {link_type}\nversion_major 0\nversion_minor 0\nnode_from {frm}\nnode_to {to}\n"
        f"weight {weight}\nmin_latency 0\nmax_latency 0\nmin_bandwidth {bandwidth}\n"
        f"max_bandwidth {bandwidth}\nrecommended_transfer_size 0\nflags 1\n"
    )


def _write_cpu_node(base: Path, index: int) -> None:
    """CPU nodes carry gpu_id 0; rocm_smi_lib still asserts that their link dirs exist."""
    node = kfd_dir(base) / "topology/nodes" / str(index)
    _write(
        node / "properties",
        (
            "cpu_cores_count 96\nsimd_count 0\nmem_banks_count 1\ncaches_count 0\n"
            "io_links_count 0\np2p_links_count 0\ncpu_core_id_base 0\nsimd_id_base 0\n"
            f"vendor_id 0\ndevice_id 0\nlocation_id 0\ndomain 0\nhive_id 0\nnum_xcc 0\n"
            f"unique_id 0\nnuma_node {index}\n"
        ),
    )
    _write(node / "gpu_id", "0\n")
    _write(node / "name", "\n")
    (node / "io_links").mkdir(parents=True, exist_ok=True)
    (node / "p2p_links").mkdir(parents=True, exist_ok=True)


def load_cards(base: Path) -> list[Card]:
    return [Card(**c) for c in json.loads((base / "cards.json").read_text())]


# ---------------------------------------------------------------- claims (the memory API)


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """One writer at a time: the daemon and every claiming process share this lock.

    Writes happen with umask 0: services run as an unprivileged user (on a real host the render
    group opens /dev/kfd), so the emulated driver state must be writable by any process.
    """
    old_umask = os.umask(0)
    try:
        with open(base / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        os.umask(old_umask)


def process_start(pid: int) -> int | None:
    """The start time of `pid` (clock ticks since boot), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: the driver has freed its memory
        return None
    return int(fields[19])


def _alive(claim: Claim) -> bool:
    start = process_start(claim["pid"])
    return start is not None and start == claim.get("start", start)  # pid reuse -> dead


def _read_claims(base: Path) -> dict[int, Claim]:
    claims: dict[int, Claim] = {}
    for path in (base / "claims").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            claims[int(data["pid"])] = data
    return claims


def _used_by(claims: dict[int, Claim], index: int, skip: int | None = None) -> int:
    return sum(
        int(c["gpus"].get(str(index), 0))  # type: ignore[attr-defined]
        for pid, c in claims.items()
        if pid != skip
    )


def claim(pid: int, gpus: dict[int, int], base: str | os.PathLike[str] | None = None) -> None:
    """Set what `pid` holds on each card ({gpu_index: bytes}); replaces its previous claim.

    Raises OutOfMemory (and changes nothing) when a card has not that much free.
    """
    root = base_dir(base)
    with _locked(root):
        claims = _drop_dead(root, _read_claims(root))
        cards = {c.index: c for c in load_cards(root)}
        for index, size in gpus.items():
            card = cards[index]
            free = card.total_bytes - card.idle_bytes - _used_by(claims, index, skip=pid)
            if size > free:
                raise OutOfMemory(index, size, free, card.total_bytes)
        gpus_held = {str(i): int(b) for i, b in gpus.items()}
        record: Claim = {"pid": pid, "start": process_start(pid), "gpus": gpus_held}
        _write(root / "claims" / f"{pid}.json", json.dumps(record) + "\n")
        claims[pid] = record
        _apply(root, claims)


def release(pid: int, base: str | os.PathLike[str] | None = None) -> None:
    """Free everything `pid` holds (what process exit does on a real GPU)."""
    root = base_dir(base)
    with _locked(root):
        with contextlib.suppress(FileNotFoundError):
            (root / "claims" / f"{pid}.json").unlink()
        _apply(root, _drop_dead(root, _read_claims(root)))


def reconcile(base: str | os.PathLike[str] | None = None) -> list[GpuState]:
    """Drop claims of dead processes and bring sysfs in line with the live ones."""
    root = base_dir(base)
    with _locked(root):
        return _apply(root, _drop_dead(root, _read_claims(root)))


def gpus(base: str | os.PathLike[str] | None = None) -> list[GpuState]:
    """The cards now, after dropping dead processes: what a HIP runtime would report."""
    return reconcile(base)


def _drop_dead(base: Path, claims: dict[int, Claim]) -> dict[int, Claim]:
    for pid, data in list(claims.items()):
        if not _alive(data):
            with contextlib.suppress(FileNotFoundError):
                (base / "claims" / f"{pid}.json").unlink()
            del claims[pid]
    return claims


def _apply(base: Path, claims: dict[int, Claim]) -> list[GpuState]:
    """Rewrite mem_info_vram_used per card and the KFD process entries (only what changed)."""
    states = []
    for card in load_cards(base):
        used = card.idle_bytes + _used_by(claims, card.index)
        dev = Path(card.device_dir)
        if (dev / "mem_info_vram_used").read_text().strip() != str(used):
            _write(dev / "mem_info_vram_used", f"{used}\n")
            _write(dev / "mem_info_vis_vram_used", f"{used}\n")  # MI300X: all VRAM is visible
        states.append(GpuState(card.index, card.bdf, card.gpu_id, card.total_bytes, used))
    _sync_kfd_procs(base, claims)
    return states


def _sync_kfd_procs(base: Path, claims: dict[int, Claim]) -> None:
    """/sys/class/kfd/kfd/proc/<pid>/ as amdkfd writes it: pasid, vram_<gpu_id>, queues/."""
    procs = kfd_dir(base) / "proc"
    by_index = {c.index: c for c in load_cards(base)}
    for entry in procs.iterdir():
        if entry.name.isdigit() and int(entry.name) not in claims:
            _remove_dir(entry)
    for pid, data in claims.items():
        # amdkfd has a vram_<gpu_id> per GPU the process opened (ROCr opens them all, whatever
        # HIP_VISIBLE_DEVICES says); rocm_smi_lib 5.2 reads every one of them or gives UNKNOWN.
        held = {card: 0 for card in by_index.values()}
        held.update({by_index[int(i)]: b for i, b in data["gpus"].items()})
        text = json.dumps({c.gpu_id: b for c, b in held.items()}, sort_keys=True)
        if (procs / str(pid) / ".claim").exists() and (
            procs / str(pid) / ".claim"
        ).read_text() == text:
            continue
        _write_proc(procs, pid, held, text)


def _write_proc(procs: Path, pid: int, held: dict[Card, int], text: str) -> None:
    """Build under a dot-name, then rename: rocm_smi_lib asserts every name there is numeric."""
    tmp = procs / f".new-{pid}"
    shutil.rmtree(tmp, ignore_errors=True)
    _write(tmp / "pasid", f"{0x8000 + pid % 0x8000}\n")
    queue = 0
    for card, size in sorted(held.items(), key=lambda kv: kv[0].index):
        _write(tmp / f"vram_{card.gpu_id}", f"{size}\n")
        _write(tmp / f"sdma_{card.gpu_id}", "0\n")
        _write(tmp / f"stats_{card.gpu_id}/cu_occupancy", "0\n")
        _write(tmp / f"stats_{card.gpu_id}/evicted_ms", "0\n")
        if not size:
            continue  # queues only where it computes: rocm-smi's GPU(s) counts these
        queue += 1
        _write(tmp / "queues" / str(queue) / "gpuid", f"{card.gpu_id}\n")
        _write(tmp / "queues" / str(queue) / "type", "1\n")
        _write(tmp / "queues" / str(queue) / "size", "1048576\n")
    _write(tmp / ".claim", text)
    target = procs / str(pid)
    if target.exists():
        _remove_dir(target)
    os.rename(tmp, target)


def _remove_dir(path: Path) -> None:
    gone = path.with_name(f".gone-{path.name}-{os.getpid()}")
    os.rename(path, gone)  # disappears in one step for readers
    shutil.rmtree(gone, ignore_errors=True)


# ---------------------------------------------------------------- mounts, unit, daemon


def _our_mounts() -> list[str]:
    """Mount points whose source is ours (source name `fakegpu`), innermost first."""
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, right = line.split(" - ", 1)
            if right.split()[1] == "fakegpu":
                points.append(left.split()[4])
    return sorted(points, key=len, reverse=True)


def mount(base: Path) -> None:
    """Overlay the tree on /sys/class and /sys/module, read-only, real entries still visible."""
    if _our_mounts():
        return
    module = Path("/sys/module")
    if not module.is_dir():  # nspawn --private-network: /sys is a ro tmpfs without module/
        subprocess.run(["mount", "-o", "remount,rw", "/sys"], check=True)
        module.mkdir()
        subprocess.run(["mount", "-o", "remount,ro", "/sys"], check=True)
    for fake, real in ((base / "class", "/sys/class"), (base / "module", "/sys/module")):
        subprocess.run(
            ["mount", "-t", "overlay", "fakegpu", "-o", f"ro,lowerdir={fake}:{real}", real],
            check=True,
        )


def unmount() -> None:
    for point in _our_mounts():
        subprocess.run(["umount", point], check=False)


UNIT = """\
[Unit]
Description=Emulated AMD GPUs for gpufleet lab hosts (fakegpu, {gpus}x {model})
DefaultDependencies=no
After=local-fs.target
Before=multi-user.target

[Service]
Type=notify
ExecStart=/usr/bin/python3 /{install_dir}/fakegpu.py run --gpus {gpus} --model {model}
ExecStopPost=/usr/bin/python3 /{install_dir}/fakegpu.py unmount
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def install_unit(root: Path, count: int, model: str) -> Path:
    """Copy this script into the host and enable fakegpu.service (a symlink: works offline)."""
    target = root / INSTALL_DIR / "fakegpu.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or not target.samefile(__file__):
        shutil.copyfile(__file__, target)
    target.chmod(0o755)
    unit = root / "etc/systemd/system" / UNIT_NAME
    _write(unit, UNIT.format(gpus=count, model=model, install_dir=INSTALL_DIR))
    _link(
        root / "etc/systemd/system/multi-user.target.wants" / UNIT_NAME,
        f"/etc/systemd/system/{UNIT_NAME}",
    )
    return unit


def _sd_notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def run(base: Path, count: int, model: str, *, do_mount: bool = True) -> None:
    """The daemon: build the tree, mount it, then sweep dead claims forever."""
    if do_mount:
        unmount()  # a rebuilt layer is a new directory: the old overlay would point at nothing
    old_umask = os.umask(0)  # see _locked: any process may claim memory
    try:
        build_tree(base, count, model)
    finally:
        os.umask(old_umask)
    if do_mount:
        mount(base)
    _sd_notify("READY=1")
    while True:
        time.sleep(SWEEP_SECONDS)
        reconcile(base)


def status_lines(base: Path) -> list[str]:
    lines = [f"{'GPU':<4}{'BDF':<14}{'GPU_ID':<8}{'USED':>16}{'TOTAL':>16}  PIDS"]
    claims = _read_claims(base)
    for s in reconcile(base):
        pids = ",".join(str(p) for p, c in claims.items() if str(s.index) in c["gpus"])
        lines.append(
            f"{s.index:<4}{s.bdf:<14}{s.gpu_id:<8}{s.used_bytes:>16}{s.total_bytes:>16}  {pids}"
        )
    return lines


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fakegpu", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("install", "run"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--gpus", type=int, default=8)
        cmd.add_argument("--model", choices=sorted(KINDS), default="mi300x")
        cmd.add_argument("--root", default="/", help="filesystem root of the host (default /)")
        cmd.add_argument("--no-mount", action="store_true", help="write the tree only")
    sub.add_parser("status")
    sub.add_parser("unmount")
    return parser


def _install(args: argparse.Namespace) -> int:
    root = Path(args.root)
    base = root / DEFAULT_BASE.lstrip("/")
    install_unit(root, args.gpus, args.model)
    if root.resolve() != Path("/"):  # an image, not the running host: mounts happen at boot
        build_tree(base, args.gpus, args.model)
        return 0
    if Path("/run/systemd/system").is_dir():  # systemd runs: let the unit own tree and mounts
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "restart", UNIT_NAME], check=True)
        return 0
    if not args.no_mount:
        unmount()
    build_tree(base, args.gpus, args.model)
    if not args.no_mount:
        mount(base)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "install":
        return _install(args)
    if args.command == "run":
        run(
            Path(args.root) / DEFAULT_BASE.lstrip("/"),
            args.gpus,
            args.model,
            do_mount=not args.no_mount,
        )
    elif args.command == "unmount":
        unmount()
    else:
        print("\n".join(status_lines(base_dir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
