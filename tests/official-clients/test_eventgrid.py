"""Event Grid deliveries of Key Vault events in each mode, to a webhook receiver that performs the real
handshakes (subscription validation for the Event Grid schema, the CloudEvents OPTIONS abuse protection),
with the secrets written through azure-keyvault-secrets."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from test_keyvault import client


class Receiver:
    def __init__(self):
        self.got = []
        self.handshakes = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_OPTIONS(self):
                origin = self.headers.get("WebHook-Request-Origin")
                receiver.handshakes.append(("OPTIONS", origin))
                self.send_response(200)
                self.send_header("WebHook-Allowed-Origin", origin or "")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                if self.headers.get("aeg-event-type") == "SubscriptionValidation":
                    code = body[0]["data"]["validationCode"]
                    receiver.handshakes.append(("SubscriptionValidation", body[0]["eventType"]))
                    out = json.dumps({"validationResponse": code}).encode()
                else:
                    receiver.got.append((self.path, self.headers.get("Content-Type"), body))
                    out = b""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n, timeout=15):
        deadline = time.time() + timeout
        while len(self.got) < n:
            assert time.time() < deadline, f"expected {n} deliveries, got {self.got}"
            time.sleep(0.05)


@pytest.mark.parametrize("mode", ["eventgrid", "cloudevents", "functions-host"])
def test_deliveries_in_each_mode_with_real_handshakes(emu, mode):
    rx = Receiver()
    try:
        target = rx.url if mode == "functions-host" else f"{rx.url}/api/events"
        emu.ctl("PUT", "/_control/eventgrid", {"target": target, "mode": mode})
        deadline = time.time() + 15
        while emu.ctl("GET", "/_control/eventgrid/subscription")["state"] == "pending":
            assert time.time() < deadline
            time.sleep(0.05)
        sub = emu.ctl("GET", "/_control/eventgrid/subscription")
        expected = {"eventgrid": "succeeded", "cloudevents": "succeeded", "functions-host": "notRequired"}[mode]
        assert sub["state"] == expected, sub

        c = client(emu)
        value = f"event-grid-{mode}-value-5a6b7c"
        emu.minted.append(value)
        s = c.set_secret(f"eg-{mode}", value)
        rx.wait(1)
        path, ctype, body = rx.got[0]
        if mode == "eventgrid":
            assert rx.handshakes == [("SubscriptionValidation", "Microsoft.EventGrid.SubscriptionValidationEvent")]
            assert ctype.startswith("application/json")
            assert isinstance(body, list) and len(body) == 1
            event = body[0]
            assert event["eventType"] == "Microsoft.KeyVault.SecretNewVersionCreated"
        elif mode == "cloudevents":
            assert rx.handshakes == [("OPTIONS", "eventgrid.azure.net")]
            assert ctype.startswith("application/cloudevents+json"), "batching is off: one event per request"
            event = body
            assert event["specversion"] == "1.0" and event["type"] == "Microsoft.KeyVault.SecretNewVersionCreated"
        else:
            assert rx.handshakes == [] and path == "/EventGridSecretChanged"
            event = body["Data"]["eventGridEvent"]
        assert event["subject"] == f"eg-{mode}"
        assert event["data"]["Version"] == s.properties.version
        assert value not in json.dumps(rx.got), "events carry no secret values"
    finally:
        emu.ctl("PUT", "/_control/eventgrid", {"target": None})
        rx.server.shutdown()
