"""The service's errors as gRPC statuses (``app.rpc.status``), and the setting that turns gRPC on.

Nothing here imports the generated ``inference`` messages, so this module can
share a process with tritonclient's copy of them.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from pydantic import ValidationError

from app.errors import (
    DeadlineExceeded,
    ModelNotFound,
    ModelServeError,
    NotReady,
    PayloadTooLarge,
    UnknownUser,
    ValidationFailed,
)
from app.rpc.status import MESSAGE_CHARS, code_of, message_of, trailing_metadata
from app.settings import Settings


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ValidationFailed("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (PayloadTooLarge("big"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotFound("no model"), grpc.StatusCode.NOT_FOUND),
        (UnknownUser("no user"), grpc.StatusCode.NOT_FOUND),
        (NotReady("starting"), grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ModelServeError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_codes(error, code):
    """Each error class maps to the status code its REST status stands for."""
    assert code_of(error) == code


def test_message_names_each_input_and_is_bounded():
    """The message is REST's summary plus ``input.part: msg`` per listed entry, the rest counted."""
    detail = [
        {"loc": ["body", "inputs", "age", "datatype"], "msg": "datatype BOOL not accepted", "type": "datatype"},
        {"loc": ["body", "inputs", "user_id"], "msg": "missing input", "type": "missing_input"},
        {"loc": ["body", "inputs", "x"], "msg": "missing input", "type": "missing_input"},
    ]
    error = ValidationFailed("invalid input: 3 error(s) in age, user_id, x", detail)
    message = message_of(error, max_details=2)
    assert message.startswith("invalid input: 3 error(s) in age, user_id, x (")
    assert "age.datatype: datatype BOOL not accepted" in message and "user_id: missing input" in message
    assert "1 more problem(s) not listed" in message and "x: missing input" not in message
    huge = ValidationFailed("x" * 10_000)
    assert len(message_of(huge, 50)) == MESSAGE_CHARS


def test_unavailable_carries_retry_after_and_retry_info():
    """UNAVAILABLE trails a retry-after key and a google.rpc.Status holding RetryInfo, both in whole seconds."""
    error = NotReady("not ready: starting", retry_after=2.5)
    metadata = dict(trailing_metadata(error, grpc.StatusCode.UNAVAILABLE, "not ready: starting"))
    assert metadata["retry-after"] == "3"
    status = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0] and status.message == "not ready: starting"
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and info.retry_delay.seconds == 3
    assert trailing_metadata(ValidationFailed("bad"), grpc.StatusCode.INVALID_ARGUMENT, "bad") == ()


def test_grpc_port_needs_a_single_process():
    """MODELSERVE_GRPC_PORT with several workers is refused, naming both settings; alone it is accepted."""
    with pytest.raises(ValidationError, match=r"MODELSERVE_GRPC_PORT.*MODELSERVE_WORKERS=1"):
        Settings(grpc_port=8001, workers=2)
    assert Settings(grpc_port=8001).grpc_port == 8001
    assert Settings().grpc_port is None
