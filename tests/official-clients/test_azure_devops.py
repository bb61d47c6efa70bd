"""Microsoft's azure-devops SDK against the emulated Azure DevOps at https://dev.azure.com (through the
emulator's proxy, only its CA trusted): the location service (OPTIONS,
ResourceAreas, connectionData with a bearer token and with a PAT over Basic auth), Token Admin (list a
user's PATs, revoke one) and the audit log paged to its end. The SDK sends api-version only in the Accept
header. The SDK has no client for the PAT Lifecycle API: PATs are created over its REST API here."""

import datetime

import msal
import requests
from azure.devops.connection import Connection
from azure.devops.v7_1.token_admin.models import TokenAdminRevocation
from msrest.authentication import BasicAuthentication, BasicTokenAuthentication

from conftest import ADMIN, ALICE, CLIENT_ID, DEVOPS, ORG
from test_entra import device_sign_in, public_app


def token(emu, upn, scopes):
    return device_sign_in(emu, public_app(emu), upn, scopes)["access_token"]


def create_pat(emu, access_token, name):
    valid_to = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = requests.post(
        f"{emu.vssps}/{ORG}/_apis/tokens/pats",
        json={"displayName": name, "scope": "vso.code", "validTo": valid_to, "allOrgs": False},
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json;api-version=7.1-preview.1"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    pat = r.json()["patToken"]
    emu.minted.append(pat["token"])
    return pat


def test_location_token_admin_and_audit(emu):
    alice_at = token(emu, ALICE, [f"{DEVOPS}/vso.pats_manage"])
    pat = create_pat(emu, alice_at, "sdk-test")
    other = create_pat(emu, alice_at, "sdk-test-2")

    # connectionData with the PAT over Basic auth names its owner.
    as_pat = Connection(base_url=f"{emu.devops}/{ORG}", creds=BasicAuthentication("", pat["token"]))
    me = as_pat.clients_v7_1.get_location_client().get_connection_data()
    assert me.authenticated_user.properties["Account"]["$value"] == ALICE
    descriptor = me.authenticated_user.subject_descriptor
    assert descriptor.startswith("aad.")

    admin_at = token(emu, ADMIN, [f"{DEVOPS}/vso.tokenadministration", f"{DEVOPS}/vso.auditlog"])
    admin = Connection(base_url=f"{emu.devops}/{ORG}", creds=BasicTokenAuthentication({"access_token": admin_at}))
    who = admin.clients_v7_1.get_location_client().get_connection_data()
    assert who.authenticated_user.properties["Account"]["$value"] == ADMIN

    # Token Admin: the resource area points at the vssps host; list, then revoke one PAT.
    ta = admin.clients_v7_1.get_token_admin_client()
    assert ta.config.base_url.rstrip("/") == f"{emu.vssps}/{ORG}"
    listed = ta.list_personal_access_tokens(descriptor, page_size=1)
    names = [t.display_name for t in listed.value]
    token_ids = {t.display_name: t.authorization_id for t in listed.value}
    cont = listed.continuation_token
    while cont:
        page = ta.list_personal_access_tokens(descriptor, page_size=1, continuation_token=cont)
        names += [t.display_name for t in page.value]
        token_ids.update({t.display_name: t.authorization_id for t in page.value})
        cont = page.continuation_token
    assert sorted(names) == ["sdk-test", "sdk-test-2"]
    ta.revoke_authorizations([TokenAdminRevocation(authorization_id=token_ids["sdk-test"])])
    r = requests.get(
        f"{emu.devops}/{ORG}/_apis/connectionData",
        auth=("", pat["token"]),
        headers={"X-TFS-FedAuthRedirect": "Suppress"},
        timeout=10,
    )
    assert r.status_code == 401, "the revoked PAT no longer authenticates"
    r = requests.get(f"{emu.devops}/{ORG}/_apis/connectionData", auth=("", other["token"]), timeout=10)
    assert r.status_code == 200

    # Audit log: the area lives on the audit host; page to the end, stopping on hasMore.
    audit = admin.clients_v7_1.get_audit_client()
    assert audit.config.base_url.rstrip("/") == f"{emu.audit}/{ORG}"
    entries, cont, pages = [], None, 0
    while True:
        page = audit.query_log(batch_size=2, continuation_token=cont)
        pages += 1
        entries += page.decorated_audit_log_entries
        assert page.continuation_token, "every page, the last one too, carries a continuation token"
        if not page.has_more:
            break
        cont = page.continuation_token
    actions = [e.action_id for e in entries]
    assert actions.count("Token.PatCreateEvent") == 2 and "Token.PatRevokeEvent" in actions, actions
    assert pages >= 2
    assert {a.action_id for a in audit.get_actions(area_name="Token")} >= {"Token.PatCreateEvent"}
