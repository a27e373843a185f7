"""Publishing a data scientist's own fitted scikit-learn pipeline as a served model version.

``publish(pipeline, data=..., target=..., version=...)`` converts the whole
pipeline to ONNX (``convert``), derives the features from the held-out frame
(``schema``, ``store``), checks the graph against the pipeline through the
service's own runtime (``parity``), computes holdout metrics per task
(``tasks``), and writes the version atomically with checksums
(``artifact``). ``modelserve publish`` is the same function on the command
line; ``mlflow`` reads MLflow model directories.
"""

from app.publish.publisher import publish
from app.publish.summary import PublishSummary

__all__ = ["PublishSummary", "publish"]
