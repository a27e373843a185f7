"""Benchmark harness: pinned servers, pinned wrk, paired rounds, Markdown tables.

The machine is small (2 CPUs) and shared, so absolute figures drift from one
minute to the next. Every figure is therefore taken next to a baseline in the
same run: servers pinned to one CPU, ``wrk -t1`` to the other, rounds that
alternate the scenarios, medians over rounds, ratios paired per round.

    scenarios = [Scenario("floor", [...], bodies), Scenario("service", [...], bodies)]
    results = run_bench(scenarios, Plan(concurrency=(1, 64)), baseline="floor")
    print(render_report(results))

One module per concern (``machine``, ``server``, ``wrk``, ``rounds``,
``report``); this one gathers what a benchmark script needs.
"""

from bench.machine import LOAD_CPU, ROOT, SERVER_CPU, BenchError, require_tools
from bench.report import Check, publish, render_report, render_table, write_report
from bench.rounds import Plan, Results, Scenario, Summary, run_bench
from bench.server import Server
from bench.wrk import WrkResult, run_wrk, write_load_script
from harness import free_port

__all__ = [
    "LOAD_CPU",
    "ROOT",
    "SERVER_CPU",
    "BenchError",
    "Check",
    "Plan",
    "Results",
    "Scenario",
    "Server",
    "Summary",
    "WrkResult",
    "free_port",
    "publish",
    "render_report",
    "render_table",
    "require_tools",
    "run_bench",
    "run_wrk",
    "write_load_script",
    "write_report",
]
