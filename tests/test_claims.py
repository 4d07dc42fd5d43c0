"""What the README and the book's introduction promise about the cpu tier holds for the results files.

Both say each cpu-tier training run takes "from a few minutes to under an hour on 2 CPU cores", "but for the
network chapter 4 ships, which trains for under two hours" (Report D's cpu-only runs): every training run recorded
in a cpu-tier ``results/*/training.json`` must fit, or the text must change.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLAIM = (
    "from a few minutes to under an hour on 2 CPU cores, but for the two longer runs of the network chapter 4 "
    "ships: under two hours, and under six for the report's own 46,800 steps"
)
# the wall-time limit of each of report_d.CPU_ONLY_RUNS that CLAIM states
LONG_RUN_LIMITS = {"cnn_long": 2 * 3600, "cnn_report": 6 * 3600}


def _train_times(x, out):
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "train_wall_time_s" and isinstance(v, (int, float)):
                out.append(float(v))
            else:
                _train_times(v, out)
    elif isinstance(x, list):
        for v in x:
            _train_times(v, out)
    return out


def test_every_cpu_training_run_is_under_an_hour():
    from diffusion_edu.experiments import report_d

    files = sorted((ROOT / "results").glob("*/training.json"))
    times, shipped = {}, []
    for path in files:
        record = json.loads(path.read_text())
        if record["tier"] == "cpu":
            data = dict(record["data"])
            if path.parent.name == "report_d":  # the exception the text names
                # a long run is recorded once finished (the report-scale one takes a dedicated afternoon)
                shipped = {run: data.pop(run)["train_wall_time_s"] for run in report_d.CPU_ONLY_RUNS if run in data}
            times[path.parent.name] = _train_times(data, [])
    assert times and all(times.values()), times  # the files name their runs' wall times
    assert all(60 <= t < 3600 for ts in times.values() for t in ts), times
    assert set(LONG_RUN_LIMITS) == set(report_d.CPU_ONLY_RUNS)
    assert "cnn_long" in shipped and all(t < LONG_RUN_LIMITS[run] for run, t in shipped.items()), shipped


def test_the_readme_and_the_intro_state_the_claim():
    for page in ("README.md", "book/intro.md"):
        text = " ".join((ROOT / page).read_text().split())
        assert CLAIM in text, page
        assert "10 minutes" not in text, page
