"""A stand-in OTLP/HTTP trace receiver for the traced benchmark subjects: answers every POST 200, keeps nothing.

    python -m bench.otlp_sink 4318 &      # then: python -m bench.run --subject service,service-traced

It counts the spans it receives only when asked (``--count``), since decoding
costs CPU on a machine the benchmark shares.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Sink(BaseHTTPRequestHandler):
    count = False
    spans = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if Sink.count:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            request = ExportTraceServiceRequest.FromString(body)
            Sink.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            print(f"{Sink.spans} spans", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=4318)
    parser.add_argument("--count", action="store_true", help="decode and print the running span count")
    args = parser.parse_args()
    Sink.count = args.count
    ThreadingHTTPServer(("127.0.0.1", args.port), Sink).serve_forever()


if __name__ == "__main__":
    main()
