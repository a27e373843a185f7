"""Demo data, training, export to ONNX and manifest writing.

- ``data``: the ``FEATURES`` spec and seeded synthetic users, events and requests;
- ``reference``: the binning rule for reference distributions (``histogram``);
- ``export``: the scikit-learn pipeline and its ONNX conversion;
- ``manifest``: the estimator-independent parts of ``manifest.json``;
- ``train``: ``train()``, which writes versions, aliases and the feature table.

Nothing is imported here, so ``app.model.reference`` stays light for the
jobs that only need the binning rule.
"""
