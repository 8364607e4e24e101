"""Input no search could run with fails at the start, in one line, before any trial."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fcasearch.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--budget", "epochs=-1"], "budget.epochs: -1"),
        (["--budget", "steps=0"], "budget.steps: 0"),
        (["--budget", "seconds=-5"], "budget.seconds: -5"),
        (["--n-trials", "0"], "n_trials: 0"),
        (["--n-trials", "-3"], "n_trials: -3"),
        (["--time-budget", "0"], "time_budget: 0"),
        (["--time-budget", "-60"], "time_budget: -60"),
        (["--trial-timeout", "-1"], "trial_timeout: -1"),
        (["--trial-timeout", "0"], "trial_timeout: 0"),
        (["--max-concurrent", "0"], "max_concurrent: 0"),
        (["--cpus-per-trial", "0"], "cpus_per_trial: 0"),
        (["--gpus-per-trial", "-1"], "gpus_per_trial: -1"),
        (["--final-rounds", "-1"], "final_rounds: -1 must be a whole number >= 0"),
        # every trial failed on these as it measured or computed them (the run itself "ran")
        (
            ["--latency-dtype", "fp64"],
            "latency_dtype: 'fp64' is not supported; use one of fp32, bf16, fp16 (--latency-dtype)",
        ),
        (
            ["--objectives", "accuracy:max", "proxy.foo:max"],
            "objectives: unknown proxy 'proxy.foo'; known: proxy.synflow, proxy.naswot, "
            "proxy.grad_norm, proxy.snip, proxy.params",
        ),
        # silently ignored before: the local executor joins no cluster
        (["--address", "auto"], "address: 'auto' names a Ray cluster, which only the Ray executor"),
        # every row's peak_mem_mb was NaN (not measured there), the study told inf: Pareto set 0
        (
            ["--runtime", "onnxruntime", "--objectives", "accuracy:max", "peak_mem_mb:min"],
            "objectives ['peak_mem_mb']: runtime 'onnxruntime' does not measure peak inference "
            "memory (its allocations bypass torch's allocator), so every trial would give NaN; "
            "drop peak_mem_mb from --objectives, or use a runtime whose memory is measured "
            "(eager, compile)",
        ),
        (
            ["--runtime", "tensorrt", "--objectives", "latency_ms:min", "peak_mem_mb:min"],
            "objectives ['peak_mem_mb']: runtime 'tensorrt' does not measure peak inference memory",
        ),
    ],
)
def test_a_count_or_duration_no_trial_could_run_with(
    extra, says, tiny_space, search_args, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert not out.exists()  # nothing started


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ("latency_dtype: fp64\n", "latency_dtype: 'fp64' is not supported"),
        ("objectives: [accuracy:max, proxy.synflw:max]\n", "did you mean 'proxy.synflow'?"),
    ],
)
def test_a_config_file_is_checked_like_the_command_line(
    config, says, tiny_space, search_args, tmp_path, capsys
):
    cfg = tmp_path / "search.yaml"
    cfg.write_text(f"space: {tiny_space}\nn_trials: 1\n{config}")
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, "--config", str(cfg))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert not out.exists()


def test_a_memory_limit_on_a_runtime_that_does_not_measure_memory(
    tiny_space, search_args, tmp_path, capsys
):
    """Every trial was infeasible (``peak_mem_mb was not measured``); on eager it is checked."""
    space = tmp_path / "limited.yaml"
    text = tiny_space.read_text()
    assert "constraints: {max_params: 200000}" in text
    space.write_text(text.replace("max_params: 200000", "max_params: 200000, max_memory_mb: 64"))
    out = tmp_path / "run"
    args = search_args(space, out, "--runtime", "onnxruntime", "--objectives", "accuracy", "macs")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert (
        "space constraint max_memory_mb 64: runtime 'onnxruntime' does not measure peak "
        "inference memory" in err
    )
    assert "drop max_memory_mb from the space's constraints" in err
    assert not out.exists()


def test_resume_passes_the_new_checks_and_names_a_stored_value_they_reject(
    tiny_space, search_args, tmp_path, capsys
):
    """A run the checks accept resumes as before; a run.yaml an earlier version wrote with a
    value the checks now reject is one line naming that file, and nothing runs."""
    out = tmp_path / "run"
    first = ["--n-trials", "1", "--objectives", "proxy.params:min", "macs:min", "--no-measure"]
    assert main(search_args(tiny_space, out, *first, "--latency-dtype", "bf16")) == 0
    resume = ["search", "--resume", str(out), "--no-progress", "--no-report"]
    assert main([*resume, "--n-trials", "2"]) == 0
    trials = (out / "trials.jsonl").read_text()
    assert len(trials.splitlines()) == 2
    capsys.readouterr()
    run_yaml = out / "run.yaml"
    text = run_yaml.read_text()
    assert "  latency_dtype: bf16\n" in text
    run_yaml.write_text(text.replace("  latency_dtype: bf16\n", "  latency_dtype: fp64\n"))
    assert main([*resume, "--n-trials", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert (
        f"--resume {out}: the run's options in {out}/run.yaml cannot run: latency_dtype: 'fp64'"
        in err
    )
    assert "start a new run (another --out)" in err
    assert (out / "trials.jsonl").read_text() == trials


def test_a_ray_address_that_does_not_answer(tiny_space, search_args, tmp_path, capsys):
    with socket.socket() as s:  # a loopback port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    args = search_args(tiny_space, out, "--executor", "ray", "--address", f"127.0.0.1:{port}")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"--address 127.0.0.1:{port}: no Ray answered within" in err and "ray start" in err
    assert not (out / "run.yaml").exists()


def test_a_malformed_ray_address(tiny_space, search_args, tmp_path, capsys):
    args = search_args(tiny_space, tmp_path / "run", "--executor", "ray", "--address", "headnode")
    assert main(args) == 2
    assert "expected auto, HOST:PORT" in capsys.readouterr().err


def test_ray_tune_that_does_not_import(tiny_space, search_args, tmp_path, capsys, monkeypatch):
    """A partial install (ray without its tune extra, or a pyarrow that does not load): one line
    naming the fix, before anything is written (it was a traceback after the run was made)."""
    monkeypatch.setitem(sys.modules, "ray.tune", None)  # `import ray.tune` now raises ImportError
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, "--executor", "ray")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--executor ray: Ray Tune does not import here" in err
    assert "pip install 'ray[tune]'" in err
    assert not out.exists()


def test_python_dash_m_fcasearch_is_the_console_script():
    done = subprocess.run(
        [sys.executable, "-m", "fcasearch", "search", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--rebuild-study" in done.stdout and "usage: fcasearch search" in done.stdout


def test_importing_fcasearch_stays_light():
    code = "import sys, fcasearch; print(sorted({'ray', 'pynvml', 'seaborn'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
