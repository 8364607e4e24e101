"""Stored tiny runs for the report tests, written the way results/README.md describes them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

FINGERPRINTS = {
    "3f9a0c1d2e4b": {
        "cpu_model": "AMD EPYC 7B13 64-Core Processor",
        "threads": 2,
        "gpu_name": None,
    },
    "77aa11bb22cc": {
        "cpu_model": "Intel Xeon Platinum 8480+",
        "threads": 16,
        "gpu_name": "NVIDIA H100 80GB HBM3",
    },
}
FAILED_REASONS = ["oom", "RuntimeError: shape mismatch in stage 3\nTraceback ...", "diverged"]


def _spec(depths, widths, heads, img, cross_window, merge_stride, tme):
    stages = []
    for i, (d, w) in enumerate(zip(depths, widths)):
        fca = i >= 2
        stages.append(
            {
                "kind": "fca" if fca else "conv",
                "depth": d,
                "width": w,
                "heads": heads[i - 2] if fca else 0,
                "cross_window": cross_window,
                "merge_stride": merge_stride,
                "tme": tme,
                "mlp_ratio": 4.0,
            }
        )
    return {"img_size": [img, img], "num_classes": 10, "in_chans": 3, "stages": stages}


def write_run(
    root: Path,
    name: str = "tiny",
    *,
    seed: int = 0,
    sampler: str = "nsga2",
    n: int = 24,
    objectives: list[dict] | None = None,
    fingerprint_id: str = "3f9a0c1d2e4b",
    csv_only: bool = False,
    statuses: dict[str, int] | None = None,
) -> Path:
    """Write ``root/name`` with run.yaml and a trials table of ``n`` trials.

    ``statuses`` gives how many failed / infeasible / pruned trials (the rest complete); one
    complete trial has no accuracy (NaN) unless ``n`` is tiny.
    """
    rng = np.random.default_rng(seed)
    objectives = objectives or [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "macs", "direction": "minimize"},
    ]
    statuses = {"failed": 3, "infeasible": 3, "pruned": 2} if statuses is None else statuses
    run = root / name
    run.mkdir(parents=True)
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    status_list = (
        ["failed"] * statuses.get("failed", 0)
        + ["infeasible"] * statuses.get("infeasible", 0)
        + ["pruned"] * statuses.get("pruned", 0)
    )
    status_list += ["complete"] * (n - len(status_list))
    order = rng.permutation(n)
    rows, clock = [], t0
    for trial in range(n):
        status = status_list[order[trial]]
        depths = (1, 1, int(rng.integers(1, 5)), int(rng.integers(1, 3)))
        widths = tuple(int(w) for w in (16, 24, rng.choice([24, 32, 48]), rng.choice([32, 48, 64])))
        heads = (max(1, widths[2] // 16), max(1, widths[3] // 16))
        cross_window = int(rng.choice([1, 2, 12]))
        tme = str(rng.choice(["all_but_last", "every:2", "none"]))
        spec = _spec(depths, widths, heads, 32, cross_window, 4, tme)
        size = sum(d * w * w for d, w in zip(depths, widths))
        params = 12 * size + int(rng.integers(1000, 5000))
        macs = 60 * size + int(rng.integers(10_000, 50_000))
        acc = 0.25 + 0.35 * (1 - np.exp(-macs / 2.5e6)) + rng.normal(0, 0.02)
        seconds = float(rng.uniform(20, 60))
        start, clock = clock, clock + timedelta(seconds=seconds)
        row = {
            "trial": trial,
            "run": name,
            "status": status,
            "reason": "",
            "arch_id": f"{rng.integers(0, 2**48):012x}",
            "spec": json.dumps(spec, sort_keys=True),
            "spec_short": f"32 C1x16 C1x24 F{depths[2]}x{widths[2]} F{depths[3]}x{widths[3]} "
            f"[w{cross_window},{tme}]",
            "arch.img_size": 32,
            "arch.depths": "-".join(map(str, depths)),
            "arch.widths": "-".join(map(str, widths)),
            "arch.total_depth": sum(depths),
            "arch.cross_tokens": depths[2] * 4 + depths[3],
            "arch.tme": tme,
            "arch.cross_windows": f"{cross_window}-{cross_window}",
            "accuracy": float(np.clip(acc, 0, 1)),
            "params": params,
            "macs": macs,
            "latency_ms": macs / 2e6 + float(rng.uniform(0.5, 1.0)),
            "latency_p90_ms": np.nan,
            "latency_cv": 0.03,
            "throughput_ips": np.nan,
            "peak_mem_mb": 20 + params * 4 / 2**20,
            "train_mem_mb": np.nan,
            "energy_mj_per_image": np.nan,
            "epochs": 2.0,
            "budget": "e2",
            "train_seconds": seconds * 0.8,
            "measure_seconds": seconds * 0.1,
            "trial_seconds": seconds,
            "started_at": start.isoformat(),
            "finished_at": clock.isoformat(),
            "device": "cpu",
            "fingerprint_id": fingerprint_id,
            "fingerprint": json.dumps(FINGERPRINTS.get(fingerprint_id, {})),
        }
        if status == "failed":
            row["reason"] = FAILED_REASONS[trial % len(FAILED_REASONS)]
            row.update(accuracy=np.nan, latency_ms=np.nan, peak_mem_mb=np.nan, epochs=0.0)
        elif status == "infeasible":
            row["reason"] = f"constraint: macs {macs / 1e6:.2f}M > max_macs 0.50M"
            row.update(accuracy=np.nan, latency_ms=np.nan, peak_mem_mb=np.nan, epochs=0.0)
        elif status == "pruned":
            row["reason"] = "pruned at epoch 1 (median rule)"
            row.update(accuracy=np.nan, epochs=1.0)
        rows.append(row)
    df = pd.DataFrame(rows)
    complete = df.index[df["status"] == "complete"]
    if len(complete) > 4:
        df.loc[complete[-1], "accuracy"] = np.nan  # a complete trial with a missing metric
    config = {
        "name": name,
        "objectives": objectives,
        "sampler": sampler,
        "seed": seed,
        "device": "cpu",
        "fingerprint": FINGERPRINTS.get(fingerprint_id, {}),
        "fingerprint_id": fingerprint_id,
        "space": {"name": "micro"},
        "versions": {"fcasearch": "0.1.0"},
        "git_revision": "0" * 40,
        "started_at": t0.isoformat(),
    }
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    df.to_csv(run / "trials.csv", index=False)
    if not csv_only:
        df.to_parquet(run / "trials.parquet", index=False)
    return run


@pytest.fixture
def make_run(tmp_path):
    """``make_run(name, **kwargs)`` writes a stored run under ``tmp_path/results``."""

    def make(name: str = "tiny", **kwargs) -> Path:
        return write_run(tmp_path / "results", name, **kwargs)

    return make


@pytest.fixture
def report_cli(monkeypatch):
    """``fcasearch.cli.main`` limited to the report subcommand (the others may be unfinished)."""
    from fcasearch import cli

    monkeypatch.setattr(cli, "COMMANDS", {"report": cli.COMMANDS["report"]})
    return cli.main
