"""The retraining rule: a quality signal must hold over consecutive windows before it pages anyone.

Each window gets one verdict. Its quality evidence is the realized metric
when enough labels have arrived, else the label-free estimate (CBPE); it is
``degraded`` when even the most favourable end of the evidence's 95%
interval is more than ``margin`` worse than the holdout figure (for RMSE, a
fraction ``margin`` of it: see ``scaled_improvement``) — so noise in
a small window does not count. Input drift (PSI at alert) alone makes a
window ``drift``: inputs moving is a reason to look, not proof that the model
got worse.

Decision over the last ``sustain`` windows: ``retrain`` when every one of
them is degraded; ``watch`` when any is degraded or the latest drifts;
``ok`` otherwise. With per-window false positives already rare (interval
bound, not point), requiring ``sustain`` in a row makes a false ``retrain``
rarer still, at the price of ``sustain`` windows of detection delay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from app.quality.bootstrap import Interval
from app.quality.metrics import scaled_improvement

Verdict = Literal["ok", "drift", "degraded", "no-data"]
Decision = Literal["ok", "watch", "retrain"]


@dataclass(frozen=True)
class Rule:
    sustain: int = 3
    """Consecutive degraded windows that make ``retrain``."""
    margin: float = 0.05
    """How much worse than the holdout figure counts as degraded: in the metric's units, or for RMSE and
    MAE (in the target's units) as a fraction of the holdout figure."""
    min_labelled: int = 200
    """Labelled rows a window needs before its realized figure is used instead of the estimate."""


def degraded(metric: str, evidence: Interval, reference: float, margin: float) -> bool:
    """Even the interval's most favourable end is more than ``margin`` worse than ``reference``."""
    ends = [evidence.value] if evidence.low is None or evidence.high is None else [evidence.low, evidence.high]
    best = max(scaled_improvement(metric, end - reference, reference) for end in ends)
    return best < -margin


def decide(verdicts: Sequence[Verdict], rule: Rule) -> Decision:
    recent = [v for v in verdicts if v != "no-data"][-rule.sustain :]
    if len(recent) == rule.sustain and all(v == "degraded" for v in recent):
        return "retrain"
    if any(v == "degraded" for v in recent) or (recent and recent[-1] == "drift"):
        return "watch"
    return "ok"
