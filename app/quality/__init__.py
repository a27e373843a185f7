"""Model quality: metrics with bootstrap intervals, calibration, label-free estimates and the retraining rule.

Pure numpy on arrays; the jobs in ``app.jobs`` (evaluate, gate, monitor,
shadow-report) read the logs and call these.
"""
