"""Fixtures for the official-client tests: one patrol-emulator process (the real binary, over real
HTTP/TLS on 127.0.0.1), its seed, the CA file clients are told to trust, and control-API helpers.

Clients are configured as a user would configure them: Azure's real URLs (login.microsoftonline.com,
dev.azure.com, <vault>.vault.azure.net), the emulator's Azure-names proxy in HTTPS_PROXY and its CA in
REQUESTS_CA_BUNDLE — and nothing else: no authority override, no disabled check.

The emulator binary is $PATROL_EMULATOR_BIN, else target/debug/patrol-emulator (built with
`cargo build -p patrol-emulator` when missing).
"""

import json
import os
import pathlib
import subprocess
import tempfile

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEVOPS = "499b84ac-1321-427f-aa17-267ca6975798"
ORG = "fabrikam"
ALICE = "alice@fabrikam.test"
ADMIN = "admin@fabrikam.test"
APP_ID = "11111111-2222-3333-4444-555555555555"
APP_SECRET = "official-clients-app-secret-0123456789"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

SEED = {
    "organizations": [{"name": ORG}],
    "users": [
        {"upn": ALICE, "displayName": "Alice", "organizations": [ORG]},
        {"upn": ADMIN, "displayName": "Admin", "organizations": [ORG], "adminOf": [ORG]},
    ],
    "apps": [{"clientId": APP_ID, "displayName": "official-clients", "clientSecret": APP_SECRET}],
}


def _binary():
    b = os.environ.get("PATROL_EMULATOR_BIN")
    if b:
        return pathlib.Path(b)
    b = ROOT / "target" / "debug" / "patrol-emulator"
    if not b.exists():
        subprocess.run(["cargo", "build", "-p", "patrol-emulator"], cwd=ROOT, check=True)
    return b


VAULT = "patrol-emu"


class Emulator:
    def __init__(self, ready, log_path):
        # The ready line names the loopback listeners; clients use Azure's names through the proxy.
        self.ready = ready
        self.devops = "https://dev.azure.com"
        self.vssps = "https://vssps.dev.azure.com"
        self.audit = "https://auditservice.dev.azure.com"
        self.entra = "https://login.microsoftonline.com"
        self.keyvault = f"https://{VAULT}.vault.azure.net/"
        self.proxy = ready["proxy"]
        self.control = ready["control"]
        self.tenant = ready["tenant"]
        self.ca = ready["ca_cert"]
        self.log_path = log_path
        # Every secret a test minted: none may appear in the emulator's output.
        self.minted = [APP_SECRET]

    @property
    def authority(self):
        return f"{self.entra}/{self.tenant}"


    def ctl(self, method, path, body=None):
        r = requests.request(method, f"{self.control}{path}", json=body, timeout=10)
        assert 200 <= r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def approve(self, user_code, upn):
        self.ctl("POST", "/_control/devicecodes/approve", {"userCode": user_code, "upn": upn})


@pytest.fixture(scope="session")
def emu():
    work = tempfile.mkdtemp(prefix="patrol-official-clients-")
    seed = pathlib.Path(work, "seed.json")
    seed.write_text(json.dumps(SEED))
    log_path = pathlib.Path(work, "emulator.log")
    log = open(log_path, "wb")
    # The SDK's location cache goes to a private directory, not the user's home.
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = str(pathlib.Path(work, "azure-devops-cache"))
    proc = subprocess.Popen(
        [
            str(_binary()),
            "--seed",
            str(seed),
            "--ca-cert",
            str(pathlib.Path(work, "ca.pem")),
            "--vault-name",
            VAULT,
            "--proxy",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, "PATROL_EMULATOR_LOG": "debug"},
    )
    line = proc.stdout.readline()
    assert line, "patrol-emulator exited before printing its ready line"
    e = Emulator(json.loads(line), log_path)
    # The two settings a user makes: trust the emulator's CA (requests, hence MSAL, azure-core and msrest,
    # reads REQUESTS_CA_BUNDLE) and send HTTPS through the emulator's proxy. Any other proxy variable from
    # the environment is cleared so that nothing bypasses the proxy or goes elsewhere.
    proxy_vars = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")
    saved = {k: os.environ.get(k) for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", *proxy_vars)}
    for k in proxy_vars:
        os.environ.pop(k, None)
    os.environ["REQUESTS_CA_BUNDLE"] = e.ca
    os.environ["CURL_CA_BUNDLE"] = e.ca
    os.environ["HTTPS_PROXY"] = e.proxy
    yield e
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=20)
    log.close()
    output = log_path.read_text(errors="replace")
    for secret in e.minted:
        assert secret not in output, "a minted secret appeared in the emulator's log"
    for p in sorted(pathlib.Path(work).rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    os.rmdir(work)
