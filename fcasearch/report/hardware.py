"""The hardware-fingerprint check: hardware-dependent objectives never mix machines silently.

Fingerprints come from every run's ``run.yaml`` and every trial row (``fingerprint_id``,
``fingerprint``); params, MACs and accuracy never need one machine, latency, memory and energy
objectives do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fcasearch.metrics import HARDWARE_METRICS

if TYPE_CHECKING:
    from fcasearch.report.info import RunData

__all__ = ["MixedHardwareError", "check_hardware", "describe_fingerprint"]


class MixedHardwareError(ValueError):
    """Hardware-dependent objectives were measured on more than one machine.

    Attributes:
        fingerprints: Fingerprint id mapped to a one-line description of its hardware.
    """

    def __init__(self, fingerprints: dict[str, str], objectives: Sequence[str]) -> None:
        self.fingerprints = dict(fingerprints)
        listed = "; ".join(f"{fid} ({desc})" for fid, desc in sorted(self.fingerprints.items()))
        super().__init__(
            f"the runs mix {len(self.fingerprints)} hardware fingerprints: {listed}. "
            f"Objectives {', '.join(objectives)} depend on the hardware, so their values are not "
            "comparable across machines. Compare runs from one machine, or pass "
            "--allow-mixed-hardware (allow_mixed_hardware=True) to report them anyway."
        )


def describe_fingerprint(fingerprint: dict[str, Any] | str | None) -> str:
    """A one-line description of the hardware in a fingerprint (CPU and GPU names).

    Args:
        fingerprint: The fingerprint dict, or its JSON.

    Returns:
        ``"CPU <model>, GPU <name>"`` with the parts known, or ``"unknown hardware"``.
    """
    if isinstance(fingerprint, str):
        try:
            fingerprint = json.loads(fingerprint)
        except ValueError:
            fingerprint = {}
    fp = fingerprint if isinstance(fingerprint, dict) else {}
    parts = []
    cpu = fp.get("cpu_model") or fp.get("cpu") or fp.get("processor")
    if cpu:
        parts.append(f"CPU {cpu}")
    gpu = fp.get("gpu_name") or fp.get("gpu")
    if gpu:
        parts.append(f"GPU {gpu}")
    return ", ".join(parts) or "unknown hardware"


def _fingerprints(runs: Sequence[RunData]) -> dict[str, str]:
    found: dict[str, str] = {}
    for run in runs:
        if run.fingerprint_id:
            found[run.fingerprint_id] = describe_fingerprint(run.fingerprint)
        df = run.trials
        rows = df[df["fingerprint_id"].notna() & (df["fingerprint_id"] != "")]
        for fid, group in rows.groupby("fingerprint_id", sort=True):
            if fid not in found or found[fid] == "unknown hardware":
                found[str(fid)] = describe_fingerprint(
                    group["fingerprint"].dropna().iloc[0]
                    if group["fingerprint"].notna().any()
                    else None
                )
    return found


def check_hardware(
    runs: Sequence[RunData], allow_mixed: bool = False
) -> tuple[dict[str, str], list[str]]:
    """Refuse to compare hardware-dependent objectives measured on different machines.

    Fingerprints are gathered from every run's ``run.yaml`` and every trial row. params, MACs
    and accuracy never need one machine; latency, memory and energy objectives do.

    Args:
        runs: The runs being compared.
        allow_mixed: Report mixed fingerprints anyway (with a note) instead of raising.

    Returns:
        The fingerprints found (id → description) and notes for the report.

    Raises:
        MixedHardwareError: If a hardware-dependent objective is present, there is more than one
            fingerprint, and ``allow_mixed`` is False.
    """
    fingerprints = _fingerprints(runs)
    hw_objectives = [o.name for o in runs[0].objectives if o.name in HARDWARE_METRICS]
    notes: list[str] = []
    if len(fingerprints) > 1:
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(fingerprints.items()))
        if hw_objectives and not allow_mixed:
            raise MixedHardwareError(fingerprints, hw_objectives)
        if hw_objectives:
            notes.append(
                f"Mixed hardware allowed by the user: objectives {', '.join(hw_objectives)} were "
                f"measured on {len(fingerprints)} machines ({listed}); hypervolumes and the front "
                "compare values from different hardware."
            )
        else:
            notes.append(
                f"Trials come from {len(fingerprints)} hardware fingerprints ({listed}). The "
                "objectives do not depend on hardware; latency, memory and energy columns do, so "
                "figures of those are split by fingerprint."
            )
    return fingerprints, notes
