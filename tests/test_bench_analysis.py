"""The bench's conclusions (bench.analysis) and their rendering (bench.report), on the committed
full run: the analysis gives back the headline summary.json holds, and rendering changes nothing."""

import json

from ser_triton.bench import analysis, report
from tests.conftest import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"
HEADLINE_KEYS = ("speedup_vs_pytorch", "speedup_vs_best_pytorch", "p50_latency_c1_vs_pytorch", "efficiency",
                 "best_within_drift_limits", "targets")
PLACEHOLDERS = ("speedup_vs_pytorch", "p50_latency_c1_vs_pytorch")
"""Where bench/summary.py leaves room for the headline among the summary's first keys."""


def committed() -> dict:
    return json.loads((RESULTS / "summary.json").read_text())


def test_the_analysis_gives_the_committed_headline():
    """The summary as bench/summary.py has it before the analysis, then the analysis stored:
    summary.json again, byte for byte."""
    summary = committed()
    measured = {key: {} if key in PLACEHOLDERS else value for key, value in committed().items()
                if key not in HEADLINE_KEYS or key in PLACEHOLDERS}
    for name, system in measured["systems"].items():
        if name != analysis.BASELINE:
            del system["best_concurrency"]
    headline = analysis.Headline.of(measured)
    assert headline.best_within_drift_limits == summary["best_within_drift_limits"] == "auto"
    assert headline.targets == summary["targets"] and any(headline.targets.values())
    headline.store(measured)
    assert json.dumps(measured, indent=1) + "\n" == (RESULTS / "summary.json").read_text()


def test_rendering_changes_nothing_it_is_given(tmp_path):
    summary = committed()
    paths = report.write(summary, tmp_path)
    assert summary == committed()
    assert paths["json"].read_text() == (RESULTS / "summary.json").read_text()
    markdown = paths["md"].read_text()
    assert markdown == report.markdown(summary)
    assert "- Best variant within the drift limits: **auto**" in markdown and "Targets: " in markdown
    assert paths["png"].stat().st_size > 0
