"""gpufleet import: vLLM command lines back into inventory services."""

from __future__ import annotations

from gpufleet.adopt import parse_find_output, service_from_argv, service_name, start_order


def test_plain_vllm_serve_round_trips():
    argv = [
        "/opt/gpufleet/venv/bin/vllm",
        "serve",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--gpu-memory-utilization",
        "0.5",
        "--max-model-len",
        "131072",
        "--enable-prefix-caching",
        "--max-num-seqs=64",
    ]
    svc = service_from_argv(argv, {"HIP_VISIBLE_DEVICES": "0"}, "llama-8b")
    assert svc == {
        "name": "llama-8b",
        "kind": "llm",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "port": 8000,
        "gpu_memory_utilization": 0.5,
        "max_model_len": 131072,
        "max_num_seqs": 64,
        "gpus": [0],
        "extra_args": ["--enable-prefix-caching"],
    }


def test_old_api_server_and_pooling_kinds():
    argv = [
        "python3",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "intfloat/multilingual-e5-large",
        "--task",
        "embed",
        "--port",
        "8033",
    ]
    svc = service_from_argv(argv, {"CUDA_VISIBLE_DEVICES": "3"}, "e5")
    assert (svc["kind"], svc["model"], svc["gpus"], svc["port"]) == (
        "embed",
        "intfloat/multilingual-e5-large",
        [3],
        8033,
    )
    rerank = service_from_argv(
        [
            "vllm",
            "serve",
            "BAAI/bge-reranker-v2-m3",
            "--runner",
            "pooling",
            "--convert",
            "classify",
        ],
        {},
        "r",
    )
    assert rerank["kind"] == "rerank" and "extra_args" not in rerank


def test_tensor_parallel_without_visible_devices():
    svc = service_from_argv(["vllm", "serve", "m/x", "-tp", "4", "--enforce-eager"], {}, "x")
    assert svc["gpus"] == [0, 1, 2, 3] and svc["enforce_eager"] is True


def test_whisper_detected_from_catalog():
    svc = service_from_argv(["vllm", "serve", "openai/whisper-large-v3"], {}, "w")
    assert svc["kind"] == "whisper"


def test_names():
    assert service_name("gpufleet-llama-8b", "x") == "llama-8b"
    assert service_name("vllm-coder", "x") == "vllm-coder"
    assert service_name(None, "Qwen/Qwen3-32B") == "qwen3-32b"


def test_parse_find_output():
    text = (
        "PID 42\nvllm\nserve\nm/x\n--port\n8001\nENV\nHIP_VISIBLE_DEVICES=2\n"
        "CGROUP 0::/system.slice/gpufleet-x.service \nEND\n"
    )
    (found,) = parse_find_output(text)
    assert found.unit == "gpufleet-x" and found.env == {"HIP_VISIBLE_DEVICES": "2"}
    assert found.argv == ["vllm", "serve", "m/x", "--port", "8001"]


def test_start_order_keeps_after_relations():
    svc = [{"name": n, "gpus": [g], "port": p}
           for n, g, p in [("embed", 0, 8001), ("asr", 2, 8021), ("chat", 0, 8000),
                           ("rerank", 2, 8020), ("solo", 1, 9000)]]
    after = {"embed": {"chat", "network.target"}, "asr": {"rerank"}, "chat": {"embed-old"}}
    assert [s["name"] for s in start_order(svc, after)] == [
        "chat", "embed", "solo", "rerank", "asr"]
    # a service that waits for another comes after it, whatever its GPU or port
    names = [s["name"] for s in start_order(svc, {"chat": {"embed"}})]
    assert names.index("embed") < names.index("chat")


def test_import_refuses_a_hostile_address_without_a_traceback():
    from support import run_cli

    for args in (["bad$host"], ["h1", "--address", "x\nProxyCommand=evil"],
                 ["h1", "--user", "root\n"]):
        result = run_cli("import", *args)
        assert result.exit_status == 2, result
        assert "Traceback" not in result.stderr and "import" in result.stderr
