"""The Open Inference Protocol (V2, REST): request types, tensor codec and the data plane.

``types`` holds the request envelope and datatypes, ``codec`` turns tensors
into columns and rows, ``dataplane`` resolves names and answers metadata and
inference. HTTP lives in ``app/api/routes/v2.py``.
"""

from app.v2.dataplane import Target, V2Service
from app.v2.types import DATATYPES, MODEL_NAME, OUTPUTS, PLATFORM, USER_ID

__all__ = ["DATATYPES", "MODEL_NAME", "OUTPUTS", "PLATFORM", "USER_ID", "Target", "V2Service"]
