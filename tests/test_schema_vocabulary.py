"""Every inventory value is hostile until the schema has typed it: each field that reaches a host
has a declared character set, checked at load with file:line (exit 2), settings included."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from support import FUZZ_FIXED, fuzz_examples

from gpufleet import inventory
from gpufleet.errors import InputError
from gpufleet.settings import TYPES, defaults, validate_settings

MINIMAL: dict[str, Any] = {
    "fleet": {"name": "t", "secrets": {"hf_token": {"env": "HF_TOKEN"}}},
    "hosts": {
        "h1": {
            "address": "h1.example",
            "gpu_count": 2,
            "services": [
                {"name": "chat", "kind": "llm", "model": "Qwen/Qwen2.5-0.5B-Instruct",
                 "gpus": [0], "port": 8000, "gpu_memory_utilization": 0.3,
                 "max_model_len": 4096, "secrets": {"HF_TOKEN": "hf_token"}},
                {"name": "docs", "kind": "docling", "gpus": [1], "port": 5001,
                 "memory_gib": 1.0},
            ],
        }
    },
}  # fmt: skip

REPRODUCER = """\
fleet: {name: t, runtime: venv, settings: {gpufleet_service_user: "\\nExecStartPre=/bin/touch /tmp/pwned"}}
hosts:
  h1:
    address: h1.example
    services:
      - {name: chat, kind: llm, model: Qwen/Qwen2.5-0.5B-Instruct, gpus: [0], port: 8000}
"""  # noqa: E501

LOCATED = re.compile(r"^inv\.yml:\d+:\d+: ", re.MULTILINE)


def mutated(**changes: Any) -> dict[str, Any]:
    """MINIMAL with `a.b.0.c=value` style changes (`hosts.h1.services.0.port`)."""
    data = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


def load(data: dict[str, Any]) -> inventory.Inventory:
    return inventory.loads(yaml.safe_dump(data, sort_keys=False), "inv.yml")


def refused(data: dict[str, Any] | str) -> str:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(InputError) as info:
        inventory.loads(text, "inv.yml")
    message = str(info.value)
    assert info.value.exit_status == 2
    assert LOCATED.search(message), message  # every error names file:line:column
    return message


def test_minimal_inventory_loads():
    assert load(MINIMAL).hosts["h1"].services[0].port == 8000


# ---------------------------------------------------------------- settings


def test_the_unit_injection_reproducer_is_refused_at_load(tmp_path, cli):
    message = refused(REPRODUCER)
    assert message.startswith("inv.yml:1:")
    assert "gpufleet_service_user" in message and "useradd" in message
    path = tmp_path / "inv.yml"
    path.write_text(REPRODUCER)
    result = cli("plan", str(path))
    assert result.exit_status == 2
    assert f"{path}:1:" in result.stderr


@pytest.mark.parametrize("value", [5, "", True, ["gpufleet"], "Root", "a b", "x" * 33, "-x"])
def test_service_user_must_be_a_user_name(value):
    message = refused(mutated(**{"fleet.settings": {"gpufleet_service_user": value}}))
    assert "gpufleet_service_user" in message


def test_host_settings_are_typed_too():
    data = mutated(**{"hosts.h1.settings": {"gpufleet_rocm_reboot": "yes"}})
    message = refused(data)
    assert "gpufleet_rocm_reboot" in message and "valid boolean" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gpufleet_rocm_repo_url", "ftp://mirror.example/rocm"),
        ("gpufleet_rocm_repo_url", "https://mirror.example/rocm apt"),
        ("gpufleet_rocm_repo_url", "https://mirror.example/\nrocm"),
        ("gpufleet_rocm_repo_url", "file:///etc/passwd"),
        ("gpufleet_pip_extra_index_urls", ["https://ok.example/simple", "not a url"]),
        ("gpufleet_pip_extra_index_urls", "https://not-a-list.example"),
        ("gpufleet_venv_dir", "relative/venv"),
        ("gpufleet_venv_dir", "/opt/../etc"),
        ("gpufleet_venv_dir", "/opt/my venv"),
        ("gpufleet_unit_read_write_paths", ["/run/fakegpu", "/tmp/$x"]),
        ("gpufleet_gpu_groups", ["render", "bad group"]),
        ("gpufleet_gpu_groups", [5]),
        ("gpufleet_rocm_pin_priority", True),
        ("gpufleet_rocm_pin_priority", "600"),
        ("gpufleet_rocm_reboot_timeout", 0),
        ("gpufleet_tuning_iommu_pt", 1),
        ("gpufleet_steps", ["rocm", "rm -rf"]),
        ("gpufleet_vllm_requirement", "vllm=={version} --index-url http://evil"),
        ("gpufleet_vllm_requirement", "vllm=={version.__class__}"),
        ("gpufleet_rocm_packages", ["rocm; rm -rf /"]),
        ("gpufleet_amdgpu_version", "30.10.1\n"),
        ("gpufleet_pip_trusted_hosts", ["mirror example"]),
        ("gpufleet_container_packages", {"docker": ["docker.io"], "lxc": ["lxc"]}),
    ],
)
def test_wrongly_typed_settings_are_refused(key, value):
    message = refused(mutated(**{"fleet.settings": {key: value}}))
    assert key in message


def test_an_unknown_setting_names_the_nearest_knobs():
    message = refused(mutated(**{"fleet.settings": {"gpufleet_servce_user": "x"}}))
    assert "unknown setting 'gpufleet_servce_user'" in message
    assert "gpufleet_service_user" in message


def test_good_settings_load_and_stay_a_plain_mapping():
    good = {"gpufleet_service_user": "svc", "gpufleet_rocm_reboot": False,
            "gpufleet_pip_trusted_hosts": ["10.0.0.1", "mirror.example:8080"],
            "gpufleet_amdgpu_version": None,
            "gpufleet_rocm_repo_url": "http://[fd00::1]:8631/rocm/apt"}  # fmt: skip
    inv = load(mutated(**{"fleet.settings": good}))
    assert inv.fleet.settings == good


def test_every_knob_of_group_data_has_a_type_and_a_valid_default():
    assert set(TYPES) == set(defaults())
    assert validate_settings(defaults(), "group_data/all.py") == defaults()


def test_validate_settings_names_the_cli_flag():
    with pytest.raises(InputError) as info:
        validate_settings({"gpufleet_service_user": "\nExecStartPre=/x"}, "--set")
    assert str(info.value).startswith("--set gpufleet_service_user: ")
    with pytest.raises(InputError) as info:
        validate_settings({"gpufleet_nope": 1}, "--set")
    assert "--set gpufleet_nope: unknown setting" in str(info.value)
    assert info.value.exit_status == 2


def test_validate_settings_locates_with_a_callable():
    with pytest.raises(InputError) as info:
        validate_settings({"gpufleet_rocm_reboot": "no"}, lambda key: f"s.yml:3:1 ({key})")
    assert str(info.value).startswith("s.yml:3:1 (gpufleet_rocm_reboot): setting")
    assert validate_settings({"gpufleet_rocm_reboot": False}, "--set") == {
        "gpufleet_rocm_reboot": False}


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("hosts.h1.services.0.port", True),
        ("hosts.h1.services.0.port", 0),
        ("hosts.h1.services.0.port", 65536),
        ("hosts.h1.services.0.port", "8000"),
        ("hosts.h1.services.0.port", 8000.0),
        ("hosts.h1.ssh_port", True),
        ("hosts.h1.gpu_count", True),
        ("hosts.h1.gpu_count", 65),
        ("hosts.h1.services.0.gpus", [True]),
        ("hosts.h1.services.0.max_model_len", True),
        ("hosts.h1.services.0.max_model_len", 0),
        ("hosts.h1.services.0.max_model_len", 10**8 + 1),
        ("hosts.h1.services.0.gpu_memory_utilization", True),
        ("hosts.h1.services.0.gpu_memory_utilization", 0),
        ("hosts.h1.services.0.gpu_memory_utilization", 1.5),
        ("hosts.h1.services.0.gpu_memory_utilization", "0.5"),
        ("hosts.h1.services.0.max_num_seqs", 0),
        ("hosts.h1.services.0.max_num_batched_tokens", False),
        ("hosts.h1.services.0.tensor_parallel_size", True),
        ("hosts.h1.services.0.kv_cache_memory_bytes", True),
        ("hosts.h1.services.0.enforce_eager", "yes"),
        ("hosts.h1.services.0.enforce_eager", 1),
        ("hosts.h1.services.1.memory_gib", -1.0),
        ("hosts.h1.services.1.memory_gib", True),
        ("hosts.h1.gpu_memory_gib", {0: 0}),
        ("fleet.rollout", {"batch_size": True}),
        ("fleet.rollout", {"health_timeout_s": 0}),
        ("fleet.rollout", {"max_failed_hosts": 0}),
    ],
)
def test_numbers_are_strict_finite_and_bounded(path, value):
    message = refused(mutated(**{path: value}))
    assert path.rsplit(".", 1)[-1] in message or "rollout" in path


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_no_nan_or_infinity(text):
    body = yaml.safe_dump(MINIMAL, sort_keys=False).replace("memory_gib: 1.0",
                                                            f"memory_gib: {text}")
    refused(body)


def test_port_true_is_refused_with_its_line():
    body = yaml.safe_dump(MINIMAL, sort_keys=False).replace("port: 8000", "port: true")
    message = refused(body)
    line = next(i for i, t in enumerate(body.splitlines(), 1) if "port: true" in t)
    assert message.startswith(f"inv.yml:{line}:")
    assert "port" in message and "True" in message


# ---------------------------------------------------------------- names and versions


def test_vllm_version_banana_is_refused():
    assert "vllm_version" in refused(mutated(**{"fleet.vllm_version": "banana"}))


@pytest.mark.parametrize("version", ["0.19.1", "0.6.3.post1", "0.9.1+rocm", "0.28.1rc1", "1"])
def test_vllm_versions_as_released(version):
    assert load(mutated(**{"fleet.vllm_version": version})).fleet.vllm_version == version


@pytest.mark.parametrize("version", ["6.4; rm -rf /", "6.4.1\n", "", "v6.4", "6." * 20])
def test_rocm_version_is_dotted_numbers(version):
    assert "rocm_version" in refused(mutated(**{"fleet.rocm_version": version}))


@pytest.mark.parametrize("name", ["../../x", "h1\nx", "a b", "-x", "x-", "a..b", "h1/x", ""])
def test_host_names_are_rfc1123(name):
    data = copy.deepcopy(MINIMAL)
    data["hosts"] = {name: data["hosts"]["h1"]}
    message = refused(data)
    assert "not a host name" in message or "empty" in message


@pytest.mark.parametrize("address", ["h1.example; rm -rf /", "h1\n", "a b", "::1%eth0", "[::1]"])
def test_addresses_are_host_names_or_ip_literals(address):
    assert "address" in refused(mutated(**{"hosts.h1.address": address}))


@pytest.mark.parametrize("address", ["10.0.0.1", "::1", "gpu-01.berget.example", "GPU01"])
def test_good_addresses(address):
    assert load(mutated(**{"hosts.h1.address": address})).hosts["h1"].address == address


@pytest.mark.parametrize("name", ["Chat", "a_b", "-x", "x-", "x" * 64, "a.b", ""])
def test_service_and_fleet_names_are_labels(name):
    refused(mutated(**{"hosts.h1.services.0.name": name}))
    refused(mutated(**{"fleet.name": name}))


@pytest.mark.parametrize("model", ["", "../x", "/etc/passwd", "a/b/c", "org/na me", "org/-x"])
def test_model_ids_follow_the_hub_grammar(model):
    assert "model" in refused(mutated(**{"hosts.h1.services.0.model": model}))


@pytest.mark.parametrize("revision", ["../../x", "main\n", "a b", "-rf", "x..y"])
def test_revisions_follow_the_hub_grammar(revision):
    assert "revision" in refused(mutated(**{"hosts.h1.services.0.revision": revision}))


@pytest.mark.parametrize("key", ["A=B", "1A", "A-B", "A B", ""])
def test_env_keys_are_posix_names(key):
    refused(mutated(**{"hosts.h1.services.0.env": {key: "x"}}))


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b"])
def test_env_values_are_one_line(value):
    message = refused(mutated(**{"hosts.h1.services.0.env": {"X": value}}))
    assert "one line" in message


def test_env_values_are_otherwise_free_text():
    value = "it's 100% \"$fine\" `here` é"
    assert load(mutated(**{"hosts.h1.services.0.env": {"X": value}})).hosts[
        "h1"].services[0].env == {"X": value}


@pytest.mark.parametrize("name", ["A=B", "a/b", "../x", "a.b", ""])
def test_secret_names_are_posix_names(name):
    message = refused(mutated(**{"fleet.secrets": {name: {"env": "HF_TOKEN"}}}))
    assert "POSIX name" in message or "empty" in message
    refused(mutated(**{"hosts.h1.services.0.secrets": {"HF_TOKEN": name}}))
    refused(mutated(**{"fleet.secrets": {"hf_token": {"env": name}}}))


@pytest.mark.parametrize("user", ["Root", "a b", "root\n", "-x", "x" * 33, "", 0])
def test_ssh_user_follows_useradd(user):
    assert "ssh_user" in refused(mutated(**{"hosts.h1.ssh_user": user}))


@pytest.mark.parametrize("path", ["relative", "/a/../b", "/a b", "/a/", "/a//b", "/a/$x", "~/m"])
def test_model_cache_is_a_plain_absolute_path(path):
    assert "model_cache" in refused(mutated(**{"fleet.model_cache": path}))


@pytest.mark.parametrize("path", ["health", "/../etc", "/h?x=1", "/h%20", "/h x", "/a//b"])
def test_health_path_is_a_plain_url_path(path):
    assert "health_path" in refused(mutated(**{"hosts.h1.services.0.health_path": path}))


@pytest.mark.parametrize("path", ["../models/x", "/a b", "a\nb"])
def test_model_path_is_a_plain_folder(path):
    assert "model_path" in refused(mutated(**{"hosts.h1.services.0.model_path": path}))


@pytest.mark.parametrize(
    "image", ["Vllm/X:1", "a b:1", "x:tag\n", "-x", "x:", "x@sha256:abc", "x:-tag", ""]
)
def test_image_references_follow_the_registry_grammar(image):
    assert "image" in refused(mutated(**{"fleet.image": image}))


@pytest.mark.parametrize(
    "image",
    ["vllm/vllm-openai-rocm:v0.19.1", "rocm/vllm:rocm6.4.1_vllm_0.11.0",
     "localhost:5000/x/y:1.2", "quay.io/docling-project/docling-serve-rocm:latest",
     "registry.example/tool@sha256:" + "a" * 64],
)  # fmt: skip
def test_good_images(image):
    assert load(mutated(**{"fleet.image": image})).fleet.image == image


def test_quantization_is_a_method_name():
    refused(mutated(**{"hosts.h1.services.0.quantization": "fp8; rm -rf /"}))


def test_command_words_have_no_control_characters():
    svc = {"name": "tool", "kind": "custom", "gpus": [1], "port": 9000, "memory_gib": 1.0,
           "command": ["/bin/tool", "--x\nExecStartPre=/bin/sh"]}  # fmt: skip
    data = mutated(**{"hosts.h1.services.1": svc})
    assert "control character" in refused(data)
    svc["command"] = ["", "x"]
    assert "program" in refused(data)


# ---------------------------------------------------------------- paths on hosts


def test_marker_file_is_one_component_under_the_cache():
    path = inventory.marker_file("/var/lib/gpufleet/models", "org/name", "feature/x")
    assert path.startswith("/var/lib/gpufleet/models/.gpufleet/org--name-")
    assert path.count("/") == "/var/lib/gpufleet/models/.gpufleet/".count("/")
    assert path.endswith(".complete")
    other = inventory.marker_file("/var/lib/gpufleet/models", "org/name", "feature/y")
    assert path != other  # the revision is in the hash
    assert inventory.marker_file("/c", "org/name", None) == inventory.marker_file(
        "/c", "org/name", "main")


@pytest.mark.parametrize(
    ("cache", "model", "revision"),
    [("/c", "../../etc", None), ("/c", "org/name", "../../x"), ("c", "org/name", None),
     ("/c", "org/name", "x\ny"), ("/c/../etc", "org/name", None)],
)  # fmt: skip
def test_marker_file_refuses_unvalidated_names(cache, model, revision):
    with pytest.raises(ValueError):
        inventory.marker_file(cache, model, revision)


@pytest.mark.parametrize("secret", ["../x", "a/b", "a.b", "", "x\n"])
def test_token_file_refuses_non_posix_secret_names(secret):
    with pytest.raises(ValueError):
        inventory.token_file("/etc/gpufleet/weights", secret)
    assert inventory.token_file("/etc/gpufleet/weights", "hf_token") == (
        "/etc/gpufleet/weights/hf_token.token")


# ---------------------------------------------------------------- hostile strings (property)

HOSTILE = "\x00\x01\x1b\x7f\n\r\t \u0085\u2028\u202e\ufeff%$'\"`;&|<>./\\-_:=@#~{}[]()*?!,+aZ09é"
PAYLOADS = ["../../x", "a\nb", "x; rm -rf /", "$(id)", "%n", "\nExecStartPre=/bin/sh", "..",
            "-rf", "/", "'", '"', "a b", "\x00", "\u202e", "0.0.0.0 ", "main\n", "%%i"]
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=HOSTILE, max_size=40),
    st.sampled_from(PAYLOADS),
    st.builds(lambda a, b: a + b, st.sampled_from(PAYLOADS), st.text(alphabet=HOSTILE,
                                                                      max_size=8)),
)


def _charset(pattern: str):
    return lambda value: re.fullmatch(pattern, value) is not None


NO_CONTROL = _charset(r"[^\x00-\x1f\x7f]*")
PLAIN_PATH = _charset(r"/[A-Za-z0-9_./-]*")
HOST_CHARS = _charset(r"[A-Za-z0-9.:-]+")

# field -> (how to put the value in MINIMAL, what an accepted value must satisfy)
FIELDS: dict[str, tuple[Any, Any]] = {
    "fleet.name": (lambda d, v: d["fleet"].update(name=v), _charset(r"[a-z0-9-]{1,63}")),
    "fleet.image": (lambda d, v: d["fleet"].update(image=v),
                    _charset(r"[A-Za-z0-9._/:@-]+")),
    "fleet.model_cache": (lambda d, v: d["fleet"].update(model_cache=v), PLAIN_PATH),
    "fleet.rocm_version": (lambda d, v: d["fleet"].update(rocm_version=v), _charset(r"[0-9.]+")),
    "fleet.vllm_version": (lambda d, v: d["fleet"].update(vllm_version=v),
                           _charset(r"[0-9a-z.+]+")),
    "fleet.bind": (lambda d, v: d["fleet"].update(bind=v), _charset(r"[0-9A-Fa-f.:]+")),
    "fleet.ssh_key": (lambda d, v: d["fleet"].update(ssh_key=v), NO_CONTROL),
    "fleet.secrets.<key>": (lambda d, v: d["fleet"]["secrets"].update({v: {"env": "X"}}),
                            _charset(r"[A-Za-z_][A-Za-z0-9_]*")),
    "fleet.secrets.*.file": (lambda d, v: d["fleet"]["secrets"].update(hf_token={"file": v}),
                             NO_CONTROL),
    "settings.gpufleet_service_user": (
        lambda d, v: d["fleet"].update(settings={"gpufleet_service_user": v}),
        _charset(r"[a-z_][a-z0-9_-]*[$]?")),
    "settings.gpufleet_rocm_repo_url": (
        lambda d, v: d["fleet"].update(settings={"gpufleet_rocm_repo_url": v}),
        _charset(r"https?://[A-Za-z0-9._~!$&'()*+,;=:@%/\[\]-]+")),
    "settings.gpufleet_venv_dir": (
        lambda d, v: d["fleet"].update(settings={"gpufleet_venv_dir": v}), PLAIN_PATH),
    "settings.gpufleet_gpu_groups": (
        lambda d, v: d["hosts"]["h1"].update(settings={"gpufleet_gpu_groups": [v]}),
        _charset(r"[a-z_][a-z0-9_-]*[$]?")),
    "settings.gpufleet_vllm_requirement": (
        lambda d, v: d["fleet"].update(settings={"gpufleet_vllm_requirement": v}),
        _charset(r"[A-Za-z0-9._\[\],=<>!~*+{}-]+")),
    "hosts.<key>": (lambda d, v: d.update(hosts={v: d["hosts"]["h1"]}), HOST_CHARS),
    "host.address": (lambda d, v: d["hosts"]["h1"].update(address=v), HOST_CHARS),
    "host.ssh_user": (lambda d, v: d["hosts"]["h1"].update(ssh_user=v),
                      _charset(r"[a-z_][a-z0-9_-]*[$]?")),
    "service.name": (lambda d, v: _svc(d).update(name=v), _charset(r"[a-z0-9-]{1,63}")),
    "service.model": (lambda d, v: _svc(d).update(model=v), _charset(r"[A-Za-z0-9._/-]+")),
    "service.revision": (lambda d, v: _svc(d).update(revision=v),
                         lambda v: re.fullmatch(r"[\x21-\x7e]+", v) and ".." not in v),
    "service.model_path": (lambda d, v: _svc(d).update(model_path=v),
                           lambda v: re.fullmatch(r"[\x21-\x7e\x80-\U0010ffff]+", v)
                           and ".." not in v.split("/")),
    "service.health_path": (lambda d, v: _svc(d).update(health_path=v),
                            lambda v: re.fullmatch(r"/[A-Za-z0-9_.~/-]*", v)
                            and ".." not in v.split("/")),
    "service.quantization": (lambda d, v: _svc(d).update(quantization=v),
                             _charset(r"[a-z0-9_-]+")),
    "service.image": (lambda d, v: _svc(d, 1).update(image=v), _charset(r"[A-Za-z0-9._/:@-]+")),
    "service.bind": (lambda d, v: _svc(d).update(bind=v), _charset(r"[0-9A-Fa-f.:]+")),
    "service.env.<key>": (lambda d, v: _svc(d).update(env={v: "x"}),
                          _charset(r"[A-Za-z_][A-Za-z0-9_]*")),
    "service.env.*": (lambda d, v: _svc(d).update(env={"X": v}), _charset(r"[^\x00\n\r]*")),
    "service.secrets.*": (lambda d, v: _svc(d).update(secrets={"HF_TOKEN": v}),
                          _charset(r"[A-Za-z_][A-Za-z0-9_]*")),
    "service.extra_args (vllm)": (lambda d, v: _svc(d).update(extra_args=[v]),
                                  lambda v: NO_CONTROL(v) and v.startswith("-")),
    "service.extra_args (docling)": (lambda d, v: _svc(d, 1).update(extra_args=[v]),
                                     NO_CONTROL),
}


def _svc(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return data["hosts"]["h1"]["services"][index]  # type: ignore[no-any-return]


@pytest.mark.parametrize("field", sorted(FIELDS))
@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(200), deadline=None)
@given(value=hostile_text)
def test_hostile_strings_are_refused_or_fit_the_field(field, value):
    put, allowed = FIELDS[field]
    data = copy.deepcopy(MINIMAL)
    put(data, value)
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        inventory.loads(text, "inv.yml")
    except InputError as exc:
        assert exc.exit_status == 2
        assert str(exc).startswith("inv.yml")  # located, never a traceback
        return
    assert allowed(value), f"{field} accepted {value!r}"
