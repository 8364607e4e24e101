"""The report page as a browser lays it out: headless Chromium at 1400 px."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fcasearch.pareto import define_hypervolume
from fcasearch.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)",
    ),
]

# after load, measure every table's box and the figures, and write the numbers into the page
MEASURE = """<script>
window.addEventListener('load', () => {
  const tables = Array.from(document.querySelectorAll('.table-wrap')).map(w => {
    const box = w.getBoundingClientRect();
    const spec = Array.from(w.querySelectorAll('th')).find(th => th.textContent === 'spec_short');
    return {scroll: w.scrollWidth, client: w.clientWidth,
            specRight: spec ? spec.getBoundingClientRect().right : null, boxRight: box.right};
  });
  const figs = {};
  document.querySelectorAll('figure img').forEach(im => { figs[im.alt] = im.clientWidth; });
  const pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify({tables, figs});
  document.body.appendChild(pre);
});
</script>"""


def _measure(page: Path, tmp_path: Path) -> dict:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000",
        "--dump-dom", probe.as_uri(),
    ]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, f"chromium printed no measurement: {dom[:500]!r}"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_tables_fit_their_boxes_and_figures_are_full_width(make_run, tmp_path):
    objectives = [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "macs", "direction": "minimize"},
        {"name": "latency_ms", "direction": "minimize"},
    ]
    runs = [make_run(f"seed{i}", seed=i, objectives=objectives) for i in range(2)]
    # a stored definition with long source texts (the method table must wrap them)
    pairs = [(o["name"], o["direction"]) for o in objectives]
    long = define_hypervolume(
        pairs, space_maximum=lambda m: (9e6, "upper bound (the space has 602,118,696,960 "
        "architectures: each stage's blocks maximized separately at its largest depth, width "
        "and MLP ratio)"), given={"latency_ms": (50.0, None)},
    )  # fmt: skip
    for run in runs:
        config = yaml.safe_load((run / "run.yaml").read_text())
        config["hypervolume"] = long.to_dict()
        (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    paths = build_report(runs, tmp_path / "report")
    measured = _measure(paths.html, tmp_path)
    assert len(measured["tables"]) >= 5
    for i, t in enumerate(measured["tables"]):
        assert t["scroll"] <= t["client"] + 1, f"table {i} overflows its box: {t}"
        if t["specRight"] is not None:
            assert t["specRight"] <= t["boxRight"] + 1, f"spec column off-screen: {t}"
    assert any(t["specRight"] is not None for t in measured["tables"])
    figs = measured["figs"]
    assert figs["objective_pairs"] == figs["hypervolume_history"]  # full width, not half
    assert figs["objective_pairs"] > 1.8 * figs["accuracy_vs_macs"]
