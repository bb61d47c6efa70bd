#!/usr/bin/env python3
"""A real OTLP/HTTP metrics receiver for patrol's metrics tests.

Accepts POST /v1/metrics (application/x-protobuf), decodes each body with the official OpenTelemetry
protobuf definitions (PyPI `opentelemetry-proto`, pinned in requirements-test.txt) and answers with an
ExportMetricsServiceResponse, as a collector does. Anything that does not decode is answered 400.

Every request is written to OUT/<n>.json as {"path", "content_type", "raw_hex" (the exact bytes received),
"points": [{"name", "unit", "kind", "temporality", "value" | "count"/"sum", "attributes", "resource"}]}
(written to a temporary name, then renamed). Prints "READY <port>" on stdout once it listens, then runs
until killed. --delay SECONDS: hold every answer that long (a slow collector).
"""
import argparse
import http.server
import itertools
import json
import os
import sys
import time

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


TEMPORALITY = {0: "unspecified", 1: "delta", 2: "cumulative"}


def points(req):
    out = []
    for rm in req.resource_metrics:
        resource = attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                data = getattr(m, kind)
                for dp in data.data_points:
                    p = {
                        "name": m.name,
                        "unit": m.unit,
                        "kind": kind,
                        "temporality": TEMPORALITY.get(getattr(data, "aggregation_temporality", 0), "?"),
                        "attributes": attrs(dp.attributes),
                        "resource": resource,
                        "scope": sm.scope.name,
                    }
                    if kind == "histogram":
                        p["count"] = dp.count
                        p["sum"] = dp.sum
                    else:
                        p["value"] = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
                    out.append(p)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()
    counter = itertools.count(1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if args.delay:
                time.sleep(args.delay)
            if self.path != "/v1/metrics":
                return self.answer(404, b"")
            req = metrics_service_pb2.ExportMetricsServiceRequest()
            try:
                req.ParseFromString(body)
            except DecodeError as e:
                return self.answer(400, str(e).encode())
            record = {
                "path": self.path,
                "content_type": self.headers.get("Content-Type"),
                "raw_hex": body.hex(),
                "points": points(req),
            }
            n = next(counter)
            tmp = os.path.join(args.out, f".{n}.tmp")
            with open(tmp, "w") as f:
                json.dump(record, f)
            os.rename(tmp, os.path.join(args.out, f"{n}.json"))
            self.answer(200, metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString())

        def answer(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
