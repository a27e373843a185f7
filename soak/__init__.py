"""The soak harness: a real server under sustained load while faults are injected.

``python -m soak.run [--short]`` trains a private workspace (or takes one),
starts ``modelserve serve`` as a real process, drives it with a small asyncio
load generator and runs one phase per fault (``soak/phases.py``). Each phase
reports requests sent, status classes and latency percentiles, and asserts
what the service promises under that fault. A phase whose feature this build
does not have is reported as skipped, with the reason, never faked.
"""
