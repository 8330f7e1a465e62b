"""The placement inventory: valid files load; each kind of mistake is a located, exit-2 error."""

from __future__ import annotations

import textwrap

import pytest
from support import INVENTORIES

from gpufleet import inventory
from gpufleet.errors import InputError

GOOD = textwrap.dedent("""\
    fleet:
      name: lab
      secrets:
        hf_token: {env: HF_TOKEN}
    hosts:
      h1:
        address: h1.test.example
        gpu_count: 2
        services:
          - name: small
            kind: llm
            model: Qwen/Qwen2.5-0.5B-Instruct
            gpus: [0]
            port: 8000
            gpu_memory_utilization: 0.3
            max_model_len: 4096
            secrets: {HF_TOKEN: hf_token}
          - name: docs
            kind: docling
            gpus: [1]
            port: 5001
            memory_gib: 1.0
""")


def load_error(text: str) -> str:
    with pytest.raises(InputError) as info:
        inventory.loads(text, "inv.yml")
    return str(info.value)


def test_good_inventory_loads():
    inv = inventory.loads(GOOD, "inv.yml")
    assert inv.fleet.name == "lab"
    assert [s.name for s in inv.hosts["h1"].services] == ["small", "docs"]
    assert inv.service_where("h1", 0, "port") == "inv.yml:14:15"


@pytest.mark.parametrize("path", sorted(INVENTORIES.rglob("*.yml")), ids=lambda p: p.name)
def test_bundled_inventories_load(path):
    # an inventory of requirements is `gpufleet place`'s input: it loads as such
    assert inventory.load(path, placing="requirements" in path.name).hosts


def test_bad_yaml_names_the_line():
    message = load_error(GOOD.replace("gpu_count: 2", "gpu_count: [2"))
    assert message.startswith("inv.yml:")
    assert "not valid YAML" in message


def test_unknown_key_is_an_error_with_allowed_keys():
    message = load_error(GOOD.replace("gpu_memory_utilization: 0.3", "gpu_memory_utilisation: 0.3"))
    assert "inv.yml:15:" in message
    assert "unknown key 'gpu_memory_utilisation' in service small" in message
    assert "gpu_memory_utilization" in message  # the hint lists the allowed keys


def test_wrong_type_shows_the_value_and_line():
    message = load_error(GOOD.replace("port: 8000", "port: eight-thousand"))
    assert "inv.yml:14:" in message and "eight-thousand" in message


def test_utilization_out_of_range():
    message = load_error(GOOD.replace("0.3", "1.3"))
    assert "inv.yml:15:" in message and "gpu_memory_utilization" in message


def test_gpu_index_out_of_range():
    message = load_error(GOOD.replace("gpus: [0]", "gpus: [2]"))
    assert "GPU index 2 is out of range" in message and "inv.yml:13:" in message


def test_duplicate_port():
    message = load_error(GOOD.replace("port: 5001", "port: 8000"))
    assert "port 8000 of service docs is already used by small" in message
    assert "inv.yml:21:" in message


def test_duplicate_service_name_on_a_host():
    text = GOOD.replace("name: docs", "name: small")
    assert "host h1: service name 'small' is used twice" in load_error(text)


def test_same_service_name_on_two_hosts_is_fine():
    text = GOOD + (
        "  h2:\n    address: h2.test.example\n    services:\n"
        "      - {name: small, kind: docling, gpus: [0], port: 1, memory_gib: 1}\n"
    )
    assert set(inventory.loads(text, "inv.yml").hosts) == {"h1", "h2"}


def test_duplicate_key():
    message = load_error(GOOD.replace("port: 8000", "port: 8000\n        port: 8001"))
    assert "duplicate key 'port'" in message


def test_undefined_secret():
    message = load_error(GOOD.replace("{HF_TOKEN: hf_token}", "{HF_TOKEN: nope}"))
    assert "secret 'nope'" in message


def test_tp_must_match_gpu_count():
    message = load_error(
        GOOD.replace("max_model_len: 4096", "max_model_len: 4096\n        tensor_parallel_size: 2")
    )
    assert "tensor_parallel_size x pipeline_parallel_size = 2" in message


def test_non_vllm_kind_needs_memory():
    assert "memory_gib" in load_error(GOOD.replace("memory_gib: 1.0", "health_path: /health"))


def test_several_errors_reported_together():
    message = load_error(GOOD.replace("port: 5001", "port: 8000").replace("gpus: [1]", "gpus: [5]"))
    assert "out of range" in message and "already used" in message


def test_cli_exit_code_2_without_traceback(cli, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(GOOD.replace("gpus: [0]", "gpus: [9]"))
    result = cli("plan", str(bad))
    assert result.exit_status == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:13:" in result.stderr


def test_missing_file(cli, tmp_path):
    result = cli("plan", str(tmp_path / "none.yml"))
    assert result.exit_status == 2 and "no such file" in result.stderr
