"""What ``publish`` returns and the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.model.manifest import Feature
from app.publish.parity import Parity


@dataclass(frozen=True)
class PublishSummary:
    version: str
    path: Path
    task: str
    estimator: str
    features: list[Feature]
    classes: list[int] | list[str] | None
    metrics: dict[str, Any]
    parity: Parity
    seconds: float
    alias: str | None = None
    previous: str | None = None
    """The version the alias pointed at before, if any."""

    def lines(self) -> list[str]:
        head = f"published {self.version} to {self.path} in {self.seconds:.1f}s: {self.estimator}, {self.task}"
        if self.classes is not None:
            head += f", classes {self.classes}"
        out = [head, f"features ({len(self.features)}):"]
        width = max(len(f.name) for f in self.features)
        for f in self.features:
            notes = ["nullable"] if f.nullable else []
            if f.categories is not None:
                notes.append(f"{len(f.categories)} categories")
            out.append(f"  {f.name:<{width}}  {f.dtype:<6}  {f.source:<7}  {', '.join(notes)}".rstrip())
        shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.metrics.items())
        out.append(f"holdout: {shown}")
        p = self.parity
        figures = [f"{p.rows} rows", f"tolerance {p.tolerance:g}"]
        if p.label_agreement is not None:
            figures.append(f"labels agree {p.label_agreement:.2%} ({p.label_ties} ties)")
        if p.max_abs_prob_diff is not None:
            figures.append(f"max |Δp| {p.max_abs_prob_diff:.2g}")
        if p.max_rel_diff is not None:
            figures.append(f"max relative Δ {p.max_rel_diff:.2g}")
        out.append("parity (ONNX vs pipeline): " + ", ".join(figures))
        if self.alias:
            out.append(f"{self.alias}: {self.previous or '-'} -> {self.version}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())
