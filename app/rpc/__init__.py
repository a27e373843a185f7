"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``) and gRPC health checking.

Served when ``MODELSERVE_GRPC_PORT`` is set, by a ``grpc.aio`` server on the
same event loop as the HTTP server, started first and stopped first by the
container (``app.container``). It is a second front end to the V2 data plane
(``app.v2``): the same names, routing, tensor codec, validation messages,
predictor (so the prediction log and the shadow), readiness (``Health``).

``tensors`` turns messages into V2 requests and answers back, ``status``
maps the service's errors to gRPC status codes, ``servicer`` implements the
RPCs, ``server`` owns the ``grpc.aio`` server. ``grpc_predict_v2*`` are
generated from ``grpc_predict_v2.proto`` by ``make proto``.

Nothing here is imported unless the port is set: the generated modules
register the ``inference.*`` messages in protobuf's default pool, which
another copy of them (a client library's, in the same process) would
collide with.
"""
