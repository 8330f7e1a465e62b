"""gpufleet.gpu.smi: rocm-smi / amd-smi output → Snapshot; and `gpufleet smi parse`."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from gpufleet import cli
from gpufleet.env import Environment
from gpufleet.gpu.smi import SmiParseError, Snapshot, merge, parse
from gpufleet.gpu.smi.values import to_bytes

FIXTURES = Path(__file__).parents[1] / "fixtures" / "smi"
SHARED = Path(os.environ.get("GPUFLEET_SHARED") or Path(__file__).resolve().parents[3] / "shared")
SAMPLES = SHARED / "data" / "smi"
MI300X_TOTAL = 206141652992  # bytes rocm-smi prints; amd-smi prints 196592 MB (MiB)


def fixture(name: str) -> Snapshot:
    return parse((FIXTURES / name).read_text(), source=name)


# --- every shared sample: one expected outcome each -------------------------------------------

# file → (GPUs, processes), or the start of the SmiParseError. A sample added to ../shared
# without a row here fails test_every_shared_sample_has_an_expectation.
E_HELP = "this is amd-smi help text"
E_ROCMINFO = "this is rocminfo output"
E_TOPO = "this is rocm-smi topology output"
E_PARTITION = "this is amd-smi partition output"
EXPECTED: dict[str, tuple[int, int] | str] = {
    "amd-smi_default-view_process-table__TheRock-issue1878_Radeon8060S_rocm7.9.txt": (1, 2),
    "amd-smi_default-view_text__amdsmi-CHANGELOG_rocm7.0.0_8xMI300X.txt": (8, 1),
    "amd-smi_list_text__amdsmi-CHANGELOG_rocm6.3.0.txt": (2, 0),
    "amd-smi_metric_--help__amdsmi-cli-README_MI300A.txt": E_HELP,
    "amd-smi_metric_--usage_text__amdsmi-CHANGELOG_rocm6.3.0_MI300.txt": (2, 0),
    "amd-smi_metric_-p_json__amdsmi-CHANGELOG_rocm6.1.0.txt": (1, 0),
    "amd-smi_metric_-w1_json_TRUNCATED__rocm-systems-pr2720_StrixHalo.txt": (1, 0),
    "amd-smi_metric_text_ELIDED__amdsmi-CHANGELOG_rocm7.1.0_MI300X.txt": (1, 0),
    "amd-smi_metric_text__rocm-blogs_amd-smi-overview_MI300X.txt": (1, 0),
    "amd-smi_monitor_--process_text__amdsmi-issue130_MI300X-VF_rocm6.4.0.txt": (1, 1),
    "amd-smi_monitor_-p_-t_-v_text__amdsmi-CHANGELOG_rocm6.2.1_MI300X_CPX.txt": (32, 0),
    "amd-smi_monitor_-p_text__amdsmi-CHANGELOG_rocm7.0.0_ELIDED.txt": (3, 0),
    "amd-smi_monitor_-putm_text__rocm-blogs_amd-smi-overview_MI300X.txt": (8, 0),
    "amd-smi_monitor_text__amdsmi-CHANGELOG_rocm7.1.0_guest.txt": (1, 0),
    "amd-smi_partition_text_TRUNCATED__legacy-rocm-build-issue4477.txt": E_PARTITION,
    "amd-smi_process_--help__amdsmi-cli-README_MI300A.txt": E_HELP,
    "amd-smi_process_csv__rocm-blogs_amd-smi-overview_MI300X.txt": (8, 7),
    "amd-smi_process_json__amdsmi-CHANGELOG_rocm6.2.0.txt": (1, 2),
    "amd-smi_process_text__rocm-blogs_amd-smi-overview_MI300X.txt": (2, 2),
    "amd-smi_process_text_nonroot__amdsmi-CHANGELOG_rocm6.2.0.txt": (1, 1),
    "amd-smi_process_text_sudo__amdsmi-CHANGELOG_rocm6.2.0.txt": (1, 1),
    "amd-smi_static_--clock_json_TRUNCATED__rocprofiler-compute-pr836_MI355X_bare-list.txt": (1, 0),
    "amd-smi_static_json_TRUNCATED__ajean-issue39_RX7800XT_gpu_data-wrapper.txt": (1, 0),
    "amd-smi_static_json_vram_jq__rocm-blogs_amd-smi-overview_MI300X.txt": "JSON, but not",
    "amd-smi_static_text__rocm-blogs_amd-smi-overview_MI300X.txt": (1, 0),
    "rocm-smi_-a_text__thamada-nvidia-smi_4xMI300X_rocm6.1.txt": (4, 1),
    "rocm-smi_-i_text__legacy-rocm-build-issue4750_MI300X_rocm6.3.3.txt": (1, 0),
    "rocm-smi_-u_showmeminfo_vram_text__ms-swift-AMD-support_MI308X_rocm7.2.txt": (8, 0),
    "rocm-smi_concise_text__ms-swift-AMD-support_MI308X_rocm7.2.txt": (8, 0),
    "rocm-smi_concise_text__thamada-nvidia-smi_1xMI300X_rocm6.1.txt": (1, 0),
    "rocm-smi_concise_text__thamada-nvidia-smi_4xMI300X_rocm6.1.txt": (4, 0),
    "rocm-smi_multiflag_json__telegraf_mi100_rocm571.txt": (6, 1),
    "rocm-smi_multiflag_json__telegraf_rx6700xt_rocm430.txt": (1, 0),
    "rocm-smi_multiflag_json__telegraf_rx6700xt_rocm571.txt": (1, 0),
    "rocm-smi_multiflag_json__telegraf_rx6700xt_rocm612.txt": (1, 0),
    "rocm-smi_multiflag_json__telegraf_vega-10-XT.txt": (1, 0),
    "rocm-smi_showmeminfo_vram_text__legacy-rocm-build-issue1909.txt": (1, 0),
    # keys from a patch that never shipped ("GPU memory use"): not read, so no VRAM figures
    "rocm-smi_showmemuse_json_after-unmerged-patch__rocm_smi_lib-pr120_RX6800.txt": (2, 0),
    "rocm-smi_showmemuse_json_before-fix__rocm_smi_lib-pr120_RX6800.txt": (2, 0),
    "rocm-smi_showpids_details_text__rocm-systems-issue4405_MI50_rocm6.4.2.txt": (0, 1),
    "rocm-smi_showpids_text__ROC-smi-issue60_MI300X-class.txt": (0, 8),
    "rocm-smi_showpids_text__rocm-systems-issue4405_MI50_rocm6.4.2_TRUNCATED.txt": (0, 1),
    "rocm-smi_showpids_text__rocm_smi_lib-issue166_unsupported.txt": (0, 4),
    "rocm-smi_showproductname_json__rocm_smi_lib-issue159_MI250X.txt": (1, 0),
    "rocm-smi_showproductname_showuse_showmeminfo_vram_csv__marimo-issue9237_RX7900XT.txt": (1, 0),
    "rocm-smi_showproductname_showuse_showmeminfo_vram_json__marimo-issue9237_RX7900XT.txt": (1, 0),
    "rocm-smi_showtopo_text__ms-swift-AMD-support_MI308X_rocm7.2.txt": E_TOPO,
    "rocm-smi_showtoponuma_text__rocm-blogs-affinity-part2_MI210.txt": E_TOPO,
    "rocminfo_--support_header_TRUNCATED__amdsmi-issue177_rocm7.2.0.txt": E_ROCMINFO,
    "rocminfo_pools_elided_text__rocm-blogs-mi200-memory-space_MI250.txt": E_ROCMINFO,
    "rocminfo_text__thamada-nvidia-smi_4xMI300X_rocm6.1.txt": E_ROCMINFO,
}


def sample(name: str) -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"shared SMI samples not found at {SAMPLES} (set GPUFLEET_SHARED)")
    return SAMPLES / name


def test_every_shared_sample_has_an_expectation() -> None:
    sample("")
    names = {p.name for p in SAMPLES.iterdir() if p.suffix != ".src"}
    assert sorted(names - EXPECTED.keys()) == [], "new samples need a row in EXPECTED"
    assert sorted(EXPECTED.keys() - names) == [], "EXPECTED names samples that are gone"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_sample(name: str) -> None:
    path, expected = sample(name), EXPECTED[name]
    if isinstance(expected, str):
        with pytest.raises(SmiParseError) as err:
            parse(path.read_text(), source=name)
        assert err.value.what.startswith(expected)
        assert err.value.where == name
        return
    snap = parse(path.read_text(), source=name)
    assert (len(snap.gpus), len(snap.processes)) == expected
    assert snap.format.startswith(snap.tool) and snap.tool == name.split("_")[0]
    if "TRUNCATED" in name or "ELIDED" in name:
        assert snap.warnings, "a cut sample must say its snapshot is partial"


def test_shared_rocm_smi_meminfo_text_mi308x() -> None:
    name = "rocm-smi_-u_showmeminfo_vram_text__ms-swift-AMD-support_MI308X_rocm7.2.txt"
    snap = parse(sample(name).read_text())
    assert {g.vram_total_bytes for g in snap.gpus} == {MI300X_TOTAL}
    assert [g.vram_used_bytes for g in snap.gpus[:2]] == [297611264, 297623552]


def test_shared_amd_smi_default_view_maps_hip_id_bdf_and_usage() -> None:
    name = "amd-smi_default-view_text__amdsmi-CHANGELOG_rocm7.0.0_8xMI300X.txt"
    snap = parse(sample(name).read_text())
    gpu0 = snap.gpus[0]
    assert (gpu0.bdf, gpu0.hip_id) == ("0000:0c:00.0", 0)
    assert (gpu0.vram_used_bytes, gpu0.vram_total_bytes) == (4976 * 2**20, MI300X_TOTAL)
    (rvs,) = snap.processes
    assert (rvs.pid, rvs.name, rvs.gpus) == (2427396, "rvs", list(range(8)))
    # per-GPU VRAM_MEM as printed (one decimal of GiB), each rounded to bytes, then summed
    shares = [2.0, 2.2, 2.3, 2.3, 2.1, 2.0, 2.1, 2.1]
    assert rvs.vram_bytes == sum(to_bytes(f"{gib} GB") or 0 for gib in shares) == 18360985189


def test_shared_amd_smi_csv_process_sums_a_pid_on_two_gpus() -> None:
    name = "amd-smi_process_csv__rocm-blogs_amd-smi-overview_MI300X.txt"
    procs = {p.pid: p for p in parse(sample(name).read_text()).processes}
    assert procs[207590].gpus == [0, 5]
    assert procs[207590].vram_bytes == 7889485824 + 7822381056
    assert procs[207591].vram_bytes == 7923122176


def test_shared_amd_smi_monitor_vf_ratio_and_nameless_process() -> None:
    name = "amd-smi_monitor_--process_text__amdsmi-issue130_MI300X-VF_rocm6.4.0.txt"
    snap = parse(sample(name).read_text())
    assert snap.gpus[0].vram_used_bytes == round(3.1 * 2**30)
    assert snap.gpus[0].vram_total_bytes == round(191.7 * 2**30)
    (proc,) = snap.processes
    assert (proc.pid, proc.name, proc.gpus, proc.vram_bytes) == (2266127, None, [0], 3006477107)


def test_shared_rocm_smi_details_rows_sum_per_pid() -> None:
    name = "rocm-smi_showpids_details_text__rocm-systems-issue4405_MI50_rocm6.4.2.txt"
    (proc,) = parse(sample(name).read_text()).processes
    assert (proc.pid, proc.gpus, proc.vram_bytes) == (132174, [], 15053770752 + 16869904384)


def test_shared_truncated_gpu_data_keeps_the_complete_bdf() -> None:
    name = "amd-smi_static_json_TRUNCATED__ajean-issue39_RX7800XT_gpu_data-wrapper.txt"
    snap = parse(sample(name).read_text())
    assert snap.gpus[0].bdf == "0000:03:00.0"
    assert "truncated" in snap.warnings[0]


# --- own fixtures: exact values ---------------------------------------------------------------

USED = [185542967296, 185543491584, *[185601556480] * 4, 297623552, 297611264]


def test_rocm_smi_meminfo_json_8x_mi300x() -> None:
    snap = fixture("rocm-smi_showmeminfo-vram_json_8xMI300X.json")
    assert (snap.tool, snap.format) == ("rocm-smi", "rocm-smi-json")
    assert [g.index for g in snap.gpus] == list(range(8))
    assert [g.vram_total_bytes for g in snap.gpus] == [MI300X_TOTAL] * 8
    assert [g.vram_used_bytes for g in snap.gpus] == USED
    assert snap.processes == [] and snap.warnings == []


def test_rocm_smi_pids_json_reads_name_and_vram_not_gpu_count() -> None:
    snap = fixture("rocm-smi_showpids_json_8xMI300X.json")
    assert snap.gpus == []
    assert [(p.pid, p.name, p.gpus, p.vram_bytes) for p in snap.processes] == [
        (412001, "vllm::enginecor", [], 185245343744),
        (412002, "vllm::enginecor", [], 185245868032),
        (412010, "vllm::enginecor", [], 740981407744),
        (412099, "python3", [], 0),
    ]


def test_rocm_smi_pids_text_takes_gpu_indices_from_showpidgpus() -> None:
    snap = fixture("rocm-smi_showpids_showpidgpus_text_8xMI300X.txt")
    assert [(p.pid, p.name, p.gpus, p.vram_bytes) for p in snap.processes] == [
        (412001, "vllm::EngineCor", [0], 185245343744),
        (412002, "vllm::EngineCor", [1], 185245868032),
        (412010, "vllm::EngineCor", [2, 3, 4, 5], 740981407744),
        (412099, "python3", [], 0),
    ]
    assert [g.index for g in snap.gpus] == [0, 1, 2, 3, 4, 5]


def test_rocm_smi_concise_lists_gpus_without_inventing_bytes() -> None:
    snap = fixture("rocm-smi_concise_text_8xMI300X.txt")
    assert [g.index for g in snap.gpus] == list(range(8))
    assert {(g.vram_total_bytes, g.vram_used_bytes, g.bdf) for g in snap.gpus} == {(None,) * 3}


def test_amd_smi_process_json_8x_mi300x() -> None:
    snap = fixture("amd-smi_process_json_8xMI300X.json")
    assert (snap.tool, snap.format) == ("amd-smi", "amd-smi-json")
    assert [g.index for g in snap.gpus] == list(range(8))
    assert [(p.pid, p.name, p.gpus, p.vram_bytes) for p in snap.processes] == [
        (412001, "python3", [0], 185245343744),
        (412002, "python3", [1], 185245868032),
        (412010, "python3", [2, 3, 4, 5], 4 * 185245351936),  # per-GPU shares summed
    ]


def test_amd_smi_metric_gpu_data_mb_is_mib_and_na_is_none() -> None:
    snap = fixture("amd-smi_metric-mem-usage_json_gpu-data_2xMI300X.json")
    assert [(g.vram_total_bytes, g.vram_used_bytes) for g in snap.gpus] == [
        (MI300X_TOTAL, 176948 * 2**20),
        (MI300X_TOTAL, None),
    ]


def test_truncated_json_keeps_complete_values_and_warns() -> None:
    snap = fixture("rocm-smi_showmeminfo-vram_json_TRUNCATED.json")
    assert [g.index for g in snap.gpus] == [0, 1, 2, 3]
    assert [g.vram_used_bytes for g in snap.gpus] == [*USED[:3], None]
    assert snap.gpus[3].vram_total_bytes == MI300X_TOTAL
    assert snap.warnings == [
        "the JSON is truncated: this snapshot holds only what came before the cut"
    ]


def test_truncated_json_number_at_the_cut_is_dropped() -> None:
    snap = parse('{"card0": {"VRAM Total Memory (B)": "1", "VRAM Total Used Memory (B)": 12')
    assert (snap.gpus[0].vram_total_bytes, snap.gpus[0].vram_used_bytes) == (1, None)


def test_truncated_json_without_a_complete_entry_is_an_error() -> None:
    with pytest.raises(SmiParseError, match="truncated JSON with no complete GPU entry"):
        parse('[\n    {\n        "gp')


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("206141652992", "B", 206141652992),
        (196592, "MB", 206141652992),
        ("196592 MB", None, 206141652992),
        ({"value": 196592, "unit": "MiB"}, None, 206141652992),
        ("58.6 KB", None, 60006),  # 58.6 * 1024 = 60006.4
        ("1 KiB", None, 1024),
        ("7.3 GB", None, 7838315315),  # 7.3 * 2**30 = 7838315315.2
        ("0.0 B", None, 0),
        ("2 GiB", None, 2 * 2**30),
        ("N/A", "MB", None),
        ("UNKNOWN", "B", None),
        ({"value": "N/A", "unit": "MB"}, None, None),
        ("12 parsecs", None, None),
    ],
)
def test_to_bytes(value: object, unit: str | None, expected: int | None) -> None:
    assert to_bytes(value, unit) == expected


def test_rocm_smi_json_na_values_are_none() -> None:
    text = '{"card0": {"VRAM Total Memory (B)": "N/A", "VRAM Total Used Memory (B)": "5"}}'
    gpu = parse(text).gpus[0]
    assert (gpu.vram_total_bytes, gpu.vram_used_bytes) == (None, 5)


def test_rocm_smi_bdf_is_lowercased_to_match_amd_smi() -> None:
    gpu = parse('{"card3": {"PCI Bus": "0000:1E:00.0"}}').gpus[0]
    assert (gpu.index, gpu.bdf) == (3, "0000:1e:00.0")


def test_rocm_smi_pid_name_with_comma_space_is_kept_whole() -> None:
    (proc,) = parse('{"system": {"PID7": "a, b, 1, 4096, 0, 0"}}').processes
    assert (proc.name, proc.vram_bytes) == ("a, b", 4096)


def test_csv_after_warning_lines() -> None:
    text = "WARNING: User is missing the following required groups: render, video.\n"
    text += (
        "gpu,name,pid,gtt_mem,cpu_mem,vram_mem,mem_usage,gfx,enc\n0,python3,77,0,0,4096,4096,0,0\n"
    )
    snap = parse(text)
    assert (snap.format, snap.processes[0].vram_bytes) == ("amd-smi-csv", 4096)


def test_amd_smi_text_no_running_processes() -> None:
    text = "GPU: 0\n    PROCESS_INFO: No running processes detected\n"
    snap = parse(text)
    assert (len(snap.gpus), snap.processes) == (1, [])


# --- refusals ---------------------------------------------------------------------------------


def test_garbage_is_refused_with_first_line_and_expected_formats() -> None:
    with pytest.raises(SmiParseError) as err:
        fixture("not-smi_nvidia-smi.txt")
    message = str(err.value)
    assert message.startswith("not-smi_nvidia-smi.txt: not rocm-smi or amd-smi output")
    assert "first line: 'Tue Nov 26 10:57:01 2024'" in message
    assert "expected one of rocm-smi --json" in message


def test_driver_not_initialised_is_an_error_despite_exit_0() -> None:
    with pytest.raises(SmiParseError, match="found no GPU driver") as err:
        fixture("rocm-smi_no-driver.txt")
    assert err.value.hint and "modprobe amdgpu" in err.value.hint


@pytest.mark.parametrize("text", ["", "   \n\n", "$ rocm-smi\n"])
def test_empty_input_is_an_error(text: str) -> None:
    with pytest.raises(SmiParseError):
        parse(text)


def test_help_text_is_named() -> None:
    with pytest.raises(SmiParseError, match="this is rocm-smi help text"):
        parse("usage: rocm-smi [-h] [-d DEVICE [DEVICE ...]]\n\nAMD ROCm System Management\n")


def test_malformed_json_is_an_error() -> None:
    with pytest.raises(SmiParseError, match="malformed JSON"):
        parse('{"card0": {"VRAM Total Memory (B)": }}')


def test_error_is_an_input_error() -> None:
    from gpufleet.errors import ExitStatus, InputError

    assert issubclass(SmiParseError, InputError)
    assert SmiParseError("x").exit_status == ExitStatus.BAD_INPUT


# --- merge ------------------------------------------------------------------------------------


def test_merge_meminfo_and_pids_of_one_host() -> None:
    mem = fixture("rocm-smi_showmeminfo-vram_json_8xMI300X.json")
    pids = fixture("rocm-smi_showpids_showpidgpus_text_8xMI300X.txt")
    snap = merge(mem, pids)
    assert (snap.tool, snap.format) == ("rocm-smi", "rocm-smi-json+rocm-smi-text")
    assert [g.vram_used_bytes for g in snap.gpus] == USED
    assert [p.gpus for p in snap.processes] == [[0], [1], [2, 3, 4, 5], []]


def test_merge_later_known_value_wins_and_unknown_does_not_erase() -> None:
    first = parse('{"card0": {"VRAM Total Memory (B)": "10", "VRAM Total Used Memory (B)": "1"}}')
    second = parse('{"card0": {"VRAM Total Memory (B)": "N/A", "VRAM Total Used Memory (B)": "2"}}')
    gpu = merge(first, second).gpus[0]
    assert (gpu.vram_total_bytes, gpu.vram_used_bytes) == (10, 2)


def test_merge_refuses_two_tools() -> None:
    with pytest.raises(SmiParseError, match="different tools"):
        merge(
            fixture("rocm-smi_concise_text_8xMI300X.txt"),
            fixture("amd-smi_process_json_8xMI300X.json"),
        )


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch):

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(list(argv), Environment(stdout=out, stderr=err, width=120))
        return code, out.getvalue(), err.getvalue()

    return run


def test_cli_json_has_exactly_the_documented_keys(run_cli) -> None:
    code, out, err = run_cli(
        "smi", "parse", str(FIXTURES / "amd-smi_process_json_8xMI300X.json"), "--json"
    )
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert set(data) == {"gpus", "processes", "tool", "format"}
    assert set(data["gpus"][0]) == {"index", "vram_total_bytes", "vram_used_bytes", "bdf", "hip_id"}
    assert set(data["processes"][0]) == {"pid", "name", "gpus", "vram_bytes"}
    assert data["gpus"][0]["bdf"] is None  # unknown is null, not missing
    assert data["processes"][2]["gpus"] == [2, 3, 4, 5]


def test_cli_table(run_cli) -> None:
    code, out, _ = run_cli(
        "smi", "parse", str(FIXTURES / "rocm-smi_showmeminfo-vram_json_8xMI300X.json")
    )
    assert code == 0
    assert "rocm-smi (rocm-smi-json)" in out
    assert "172.8" in out and "192.0" in out  # GPU 0 used / total GiB


def test_cli_stdin(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"card0": {"VRAM Total Memory (B)": "1024"}}'))
    code, out, _ = run_cli("smi", "parse", "-", "--json")
    assert code == 0 and json.loads(out)["gpus"][0]["vram_total_bytes"] == 1024


def test_cli_warns_on_truncated_input(run_cli) -> None:
    code, _, err = run_cli(
        "smi", "parse", str(FIXTURES / "rocm-smi_showmeminfo-vram_json_TRUNCATED.json")
    )
    assert code == 0 and "truncated" in err


@pytest.mark.parametrize(
    ("name", "message"),
    [("not-smi_nvidia-smi.txt", "not rocm-smi or amd-smi output"), ("missing.json", "cannot read")],
)
def test_cli_bad_input_exits_2(run_cli, name: str, message: str) -> None:
    code, out, err = run_cli("smi", "parse", str(FIXTURES / name), "--json")
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err
