"""What Ansible and pyinfra habits expect of the command line: host groups and `--limit`,
a confirmation on a terminal (never without one), `--yes`, `rebuild --dry-run`, `--version`,
shell completion."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import REPO, fuzz_examples, run_cli

from gpufleet import inventory
from gpufleet.cli import main
from gpufleet.env import Environment
from gpufleet.errors import InputError

FLEET = """\
fleet: {{name: t, vllm_version: "0.19.1", image: "vllm/vllm-openai-rocm:v0.19.1"}}
hosts:
{hosts}
"""
HOST = """\
  {name}:
    address: {name}.t.example
    gpu_count: 1
    groups: {groups}
    services:
      - {{name: chat, kind: llm, model: Qwen/Qwen2.5-0.5B-Instruct, gpus: [0], port: 8000,
         gpu_memory_utilization: 0.3, max_model_len: 4096}}
"""
LAYOUT = {"gpu-01": ["rack-a", "canary"], "gpu-02": ["rack-a"], "gpu-03": ["rack-b"],
          "cpu-01": []}


def fleet_text(layout: dict[str, list[str]] = LAYOUT) -> str:
    return FLEET.format(hosts="".join(HOST.format(name=n, groups=g) for n, g in layout.items()))


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yml"
    path.write_text(fleet_text())
    return path


# ---------------------------------------------------------------- groups and --limit


@pytest.mark.parametrize(("pattern", "hosts"), [
    ("gpu-01", ["gpu-01"]),
    ("rack-a", ["gpu-01", "gpu-02"]),
    ("gpu-0*", ["gpu-01", "gpu-02", "gpu-03"]),
    ("rack-a,rack-b", ["gpu-01", "gpu-02", "gpu-03"]),
    ("rack-a:!canary", ["gpu-02"]),
    ("!rack-a", ["gpu-03", "cpu-01"]),
    ("gpu-*,&rack-a", ["gpu-01", "gpu-02"]),
    ("rack-*", ["gpu-01", "gpu-02", "gpu-03"]),
])
def test_limit_selects_as_ansible_does(pattern: str, hosts: list[str]) -> None:
    inv = inventory.loads(fleet_text(), "f.yml")
    assert inventory.select_hosts(inv, pattern) == hosts


@pytest.mark.parametrize("pattern", ["rack-c", "gpu-01,typo", "rack-a,&rack-b", ",", "!*"])
def test_a_limit_that_names_nothing_is_refused(fleet: Path, pattern: str) -> None:
    result = run_cli("plan", str(fleet), "--limit", pattern)
    assert result.exit_status == 2 and "--limit" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_render_and_friends_act_on_the_limited_hosts(fleet: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    import json

    result = run_cli("plan", str(fleet), "--limit", "rack-a", "--json")
    assert [h["name"] for h in json.loads(result.stdout)["hosts"]] == ["gpu-01", "gpu-02"]
    out = tmp_path / "out"
    assert run_cli("render", str(fleet), "--limit", "rack-b", "--out", str(out)).exit_status == 0
    assert sorted(p.name for p in out.iterdir()) == ["gpu-03"]
    both = run_cli("plan", str(fleet), "--limit", "rack-a", "--host", "gpu-03")
    assert both.exit_status == 2 and "not among the hosts" in both.stderr
    for command in ("deploy", "validate", "status", "drift", "render"):
        assert run_cli(command, "--help").exit_status == 0
        assert "--limit PATTERN" in capsys.readouterr().out


@pytest.mark.parametrize(("groups", "says"), [
    ("['rack a']", "not a group name"), ("['gpu-02']", "has the name of a host"),
    ("['*']", "not a group name"), ("'rack-a'", "groups"),
])
def test_bad_groups_are_refused_with_their_line(tmp_path: Path, groups: str, says: str) -> None:
    text = fleet_text().replace("groups: ['rack-a', 'canary']", f"groups: {groups}", 1)
    with pytest.raises(InputError) as err:
        inventory.loads(text, "f.yml")
    assert says in str(err.value) and "f.yml:" in str(err.value)


names = st.sampled_from(["a1", "a2", "b1", "b2", "c1"])
group_names = st.sampled_from(["g1", "g2", "g3"])


@settings(max_examples=fuzz_examples(60), deadline=None)
@given(layout=st.dictionaries(names, st.lists(group_names, unique=True), min_size=1),
       terms=st.lists(st.tuples(st.sampled_from(["", "!", "&"]),
                                st.sampled_from(["a1", "b2", "g1", "g2", "g3", "a*", "*1", "*"])),
                      min_size=1, max_size=4))
def test_limit_is_union_then_intersection_then_exclusion(layout: dict[str, list[str]],
                                                          terms: list[tuple[str, str]]) -> None:
    """Against a model written from the semantics, with sets: a term naming nothing is refused,
    as is an empty result; otherwise the hosts come back in inventory order."""
    import fnmatch

    inv = inventory.loads(fleet_text(layout), "f.yml")

    def named(term: str) -> set[str]:
        return {h for h, gs in layout.items()
                if fnmatch.fnmatchcase(h, term) or any(fnmatch.fnmatchcase(g, term) for g in gs)}

    pattern = ",".join(op + t for op, t in terms)
    plain = [t for op, t in terms if not op]
    expected = set().union(*(named(t) for t in plain)) if plain else set(layout)
    for op, t in terms:
        expected = expected & named(t) if op == "&" else expected - named(t) if op == "!" \
            else expected
    if any(not named(t) for _, t in terms) or not expected:
        with pytest.raises(InputError):
            inventory.select_hosts(inv, pattern)
    else:
        assert inventory.select_hosts(inv, pattern) == [h for h in layout if h in expected]


# ---------------------------------------------------------------- confirmation


def _on_a_terminal(argv: list[str], answer: bytes, timeout: float = 60) -> tuple[int, str]:
    """Run the real command line with a pseudo-terminal as stdin/stdout/stderr, type `answer`
    once it asks, and return (exit status, what the terminal showed)."""
    parent, child = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}
    proc = subprocess.Popen([sys.executable, "-m", "gpufleet", *argv], stdin=child,
                            stdout=child, stderr=child, cwd=REPO, env=env, close_fds=True)
    os.close(child)
    shown, sent, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([parent], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(parent, 4096)
            except OSError:  # the child closed the terminal
                break
            shown += chunk
            if not sent and b"[y/N]" in shown:
                os.write(parent, answer)
                sent = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(parent)
    return code, re.sub(r"\x1b\[[0-9;]*m", "", shown.decode(errors="replace"))


def test_deploy_on_a_terminal_asks_and_a_no_changes_nothing(fleet: Path) -> None:
    code, shown = _on_a_terminal(["deploy", str(fleet), "--limit", "rack-a"], b"n\n")
    assert "deploy rocm, tuning, runtime, weights, services to 2 host(s) (gpu-01, gpu-02)" in shown
    assert "[y/N]" in shown and "not confirmed: nothing changed" in shown
    assert code == 1  # and no host was contacted: .example names never resolve


def test_rebuild_on_a_terminal_asks_before_it_changes_anything(fleet: Path) -> None:
    code, shown = _on_a_terminal(["rebuild", "gpu-03", "-i", str(fleet), "--force"], b"\n")
    assert "rebuild gpu-03 from bare OS? [y/N]" in shown and "not confirmed" in shown
    assert code == 1


class _Stop(Exception):
    """Raised by the stand-in for the fleet lock: the deploy got past its confirmation."""


def test_without_a_terminal_it_never_asks_and_yes_skips_the_question(
        fleet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpufleet.commands import deploy

    def stop(*_: object, **__: object) -> None:
        raise _Stop

    monkeypatch.setattr(deploy, "fleet_lock", stop)
    asked = []

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stdin, stderr, extra in ((io.StringIO("n\n"), io.StringIO(), []),
                                 (Tty("n\n"), Tty(), ["--yes"])):
        env = Environment(io.StringIO(), stderr, 120, stdin)
        monkeypatch.setattr(env, "confirm", lambda q: asked.append(q) or False) \
            if extra else None
        with pytest.raises(_Stop):
            main(["deploy", str(fleet), *extra], env=env)
        assert "[y/N]" not in stderr.getvalue()
    assert asked == []


# ---------------------------------------------------------------- --version, completion


def test_version() -> None:
    from gpufleet import __version__

    done = subprocess.run([sys.executable, "-m", "gpufleet", "--version"], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == f"gpufleet {__version__}"


def _complete(script: Path, *words: str) -> list[str]:
    """What bash itself completes for `gpufleet WORDS...` (the last word being typed)."""
    line = " ".join(f"'{w}'" for w in words)
    cmd = (f"source {script}; COMP_WORDS=(gpufleet {line}); COMP_CWORD={len(words)}; "
           "_gpufleet; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "-c", cmd], capture_output=True, text=True,
                          check=True)
    return done.stdout.split()


def test_bash_completes_commands_flags_and_choices(tmp_path: Path) -> None:
    from gpufleet.commands import SUMMARIES

    script = tmp_path / "gpufleet.bash"
    result = run_cli("completion", "bash")
    assert result.exit_status == 0
    script.write_text(result.stdout)
    assert set(SUMMARIES) <= set(_complete(script, ""))
    assert _complete(script, "dep") == ["deploy"]
    assert "--limit" in _complete(script, "deploy", "--l")
    assert _complete(script, "place", "x.yml", "--objective", "") == ["pack", "spread"]
    assert "--json" in _complete(script, "plan", "--")
    (tmp_path / "fleet.yml").write_text("x")
    os.chdir(tmp_path)
    assert "fleet.yml" in _complete(script, "plan", "fl")


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str) -> None:
    from gpufleet.commands import SUMMARIES

    text = run_cli("completion", shell).stdout
    assert all(name in text for name in SUMMARIES) and "--limit" in text or "limit" in text
