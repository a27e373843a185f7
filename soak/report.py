"""Per-phase results and the tables the harness prints (Markdown, for RELIABILITY.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from soak.load import Sample


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class PhaseResult:
    name: str
    description: str
    samples: list[Sample] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    skipped: str | None = None
    allow_503: bool = False
    """True while a feature is truly unavailable (documented 503 with Retry-After)."""
    notes: list[str] = field(default_factory=list)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(what, bool(ok), detail))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return self.skipped is not None or all(c.ok for c in self.checks)

    def counts(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for s in self.samples:
            c["sent"] += 1
            if s.status == 0:
                c["neterr"] += 1
            else:
                c[f"{s.status // 100}xx"] += 1
                if s.status == 503:
                    c["503"] += 1
        return c

    def versions(self) -> Counter[str]:
        return Counter(s.version or "-" for s in self.samples if s.status == 200)

    def latency_ms(self, q: float) -> float:
        return percentile([s.latency for s in self.samples if s.status != 0], q) * 1000

    def assert_traffic(self) -> None:
        """The checks every phase makes on its own traffic."""
        c = self.counts()
        bad5 = [s for s in self.samples if s.status >= 500 and not (self.allow_503 and s.status == 503)]
        self.check("requests were sent", c["sent"] > 0, f"{c['sent']} sent")
        self.check("no 5xx for valid requests", not bad5, _examples(bad5))
        if self.allow_503:
            no_ra = [s for s in self.samples if s.status == 503 and not s.retry_after]
            self.check("every 503 carries Retry-After", not no_ra, _examples(no_ra))
        bad4 = [s for s in self.samples if 400 <= s.status < 500]
        self.check("no 4xx for valid requests", not bad4, _examples(bad4))
        lost = [s for s in self.samples if s.status == 0]
        self.check("no connection errors", not lost, _examples(lost))


def _examples(samples: list[Sample], n: int = 3) -> str:
    if not samples:
        return ""
    shown = ", ".join(f"{s.request_id}:{s.status} {s.error or ''}".strip() for s in samples[:n])
    return f"{len(samples)} e.g. {shown}"


def phase_table(results: list[PhaseResult]) -> str:
    head = "| phase | sent | 2xx | 4xx | 5xx | of which 503 | net err | p50 ms | p99 ms | versions | result |"
    rows = [head, "|" + "---|" * 11]
    for r in results:
        if r.skipped is not None:
            rows.append(f"| {r.name} | – | – | – | – | – | – | – | – | – | skipped: {r.skipped} |")
            continue
        c = r.counts()
        versions = ", ".join(f"{v}:{n}" for v, n in sorted(r.versions().items())) or "-"
        verdict = "pass" if r.ok else "FAIL"
        rows.append(
            f"| {r.name} | {c['sent']} | {c['2xx']} | {c['4xx']} | {c['5xx']} | {c['503']} | {c['neterr']} "
            f"| {r.latency_ms(50):.2f} | {r.latency_ms(99):.2f} | {versions} | {verdict} |"
        )
    return "\n".join(rows)


def checks_table(results: list[PhaseResult]) -> str:
    rows = ["| phase | check | result | detail |", "|---|---|---|---|"]
    for r in results:
        if r.skipped is not None:
            rows.append(f"| {r.name} | – | skipped | {r.skipped} |")
            continue
        for c in r.checks:
            detail = c.detail.replace("|", "\\|").replace("\n", " ")
            rows.append(f"| {r.name} | {c.what} | {'pass' if c.ok else 'FAIL'} | {detail} |")
    return "\n".join(rows)
