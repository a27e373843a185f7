"""The sustained-signal rule: one bad window is a watch, only consecutive degraded windows are a retrain."""

from __future__ import annotations

from app.quality.bootstrap import Interval
from app.quality.decision import Rule, decide, degraded


def test_retrain_needs_every_recent_window_degraded() -> None:
    """Three degraded windows in a row say retrain; a gap or a drift-only window says watch."""
    rule = Rule(sustain=3)
    assert decide(["ok", "degraded", "degraded", "degraded"], rule) == "retrain"
    assert decide(["degraded", "degraded", "ok", "degraded"], rule) == "watch"
    assert decide(["ok", "ok", "drift"], rule) == "watch"
    assert decide(["drift", "ok", "ok"], rule) == "ok"
    assert decide(["degraded", "degraded"], rule) == "watch"


def test_windows_without_data_are_skipped() -> None:
    """Empty windows neither break nor make a run of degraded windows."""
    assert decide(["degraded", "no-data", "degraded", "degraded"], Rule(sustain=3)) == "retrain"
    assert decide(["no-data", "no-data", "no-data"], Rule(sustain=3)) == "ok"


def test_degraded_uses_the_favourable_end_of_the_interval() -> None:
    """A point below the margin is not degraded while the interval reaches back to it; direction follows the metric."""
    assert not degraded("roc_auc", Interval(0.80, 0.76, 0.84), 0.86, 0.05)
    assert degraded("roc_auc", Interval(0.78, 0.76, 0.80), 0.86, 0.05)
    assert degraded("rmse", Interval(1.3, 1.2, 1.4), 1.0, 0.1)
    assert not degraded("rmse", Interval(1.3, 1.05, 1.4), 1.0, 0.1)


def test_rmse_margin_is_a_fraction_of_the_holdout() -> None:
    """RMSE is in the target's units: 5% of a holdout RMSE of 1000 is the margin, not 0.05 of a unit (a window 0.5%
    worse than the holdout was degraded for any regression whose target is larger than about 10)."""
    assert not degraded("rmse", Interval(1010.0, 1005.0, 1015.0), 1000.0, 0.05)
    assert degraded("rmse", Interval(1200.0, 1100.0, 1300.0), 1000.0, 0.05)
    assert not degraded("mae", Interval(1040.0, 1030.0, 1049.0), 1000.0, 0.05)
