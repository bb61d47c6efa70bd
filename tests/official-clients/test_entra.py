"""MSAL and azure-identity against the emulated Entra at its real authority (https://login.microsoftonline.com,
reached through the emulator's proxy), with only the emulator's CA trusted and every client check on: OpenID
discovery, device code (approved through the control API), refresh, client credentials, client_info
accounts, ID-token issuer validation and signed JWTs verified with the published keys."""

import json
import threading

import jwt
import msal
import requests
from azure.identity import ClientSecretCredential, DeviceCodeCredential

from conftest import ALICE, APP_ID, APP_SECRET, CLIENT_ID, DEVOPS, ORG

PAT_SCOPES = [f"{DEVOPS}/vso.pats", f"{DEVOPS}/vso.pats_manage"]


def public_app(emu, cache=None):
    # As against Azure: the authority, nothing else (the CA and the proxy come from the environment).
    return msal.PublicClientApplication(CLIENT_ID, authority=emu.authority, token_cache=cache)


def device_sign_in(emu, app, upn, scopes):
    flow = app.initiate_device_flow(scopes=scopes)
    assert "user_code" in flow, flow
    emu.approve(flow["user_code"], upn)
    result = app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result
    emu.minted += [result["access_token"], result.get("refresh_token", "")]
    return result


def verify_jwt(emu, token, audience):
    config = requests.get(f"{emu.authority}/v2.0/.well-known/openid-configuration", verify=emu.ca, timeout=10).json()
    keys = jwt.PyJWKClient(config["jwks_uri"], ssl_context=_ssl(emu))
    key = keys.get_signing_key_from_jwt(token)
    # The emulator's clock may run ahead of the host's; times are checked by the emulated services.
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})


def _ssl(emu):
    import ssl

    return ssl.create_default_context(cafile=emu.ca)


def test_msal_device_flow_refresh_and_client_credentials(emu):
    cache = msal.SerializableTokenCache()
    app = public_app(emu, cache)
    result = device_sign_in(emu, app, ALICE, PAT_SCOPES)
    claims = result["id_token_claims"]
    assert claims["preferred_username"] == ALICE
    assert claims["tid"] == emu.tenant
    # MSAL checked the ID token's issuer against discovery's; both name Entra's real host.
    assert claims["iss"] == f"https://login.microsoftonline.com/{emu.tenant}/v2.0"
    # client_info: MSAL keys the account by {oid}.{tid}.
    (account,) = app.get_accounts()
    assert account["home_account_id"] == f"{claims['oid']}.{emu.tenant}"
    assert account["username"] == ALICE

    at = verify_jwt(emu, result["access_token"], DEVOPS)
    assert at["upn"] == ALICE and at["oid"] == claims["oid"] and at["tid"] == emu.tenant
    assert set(at["scp"].split()) == {"vso.pats", "vso.pats_manage"}
    assert at["iss"] == f"https://sts.windows.net/{emu.tenant}/"

    # The access token works on the PAT Lifecycle API, api-version in the Accept header.
    r = requests.get(
        f"{emu.vssps}/{ORG}/_apis/tokens/pats",
        headers={"Authorization": f"Bearer {result['access_token']}", "Accept": "application/json;api-version=7.1-preview.1"},
        timeout=10,
    )
    assert r.status_code == 200, r.text

    # Silent refresh through the cache's refresh token.
    again = app.acquire_token_silent(PAT_SCOPES, account=account, force_refresh=True)
    assert again and "access_token" in again and again["access_token"] != result["access_token"]
    emu.minted.append(again["access_token"])

    # Entra semantics: a refresh token stays valid after use; each use returns a new one.
    rt = result["refresh_token"]
    first = app.acquire_token_by_refresh_token(rt, PAT_SCOPES)
    second = app.acquire_token_by_refresh_token(rt, PAT_SCOPES)
    assert "access_token" in first and "access_token" in second, (first, second)
    assert first["refresh_token"] != rt
    emu.minted += [first["access_token"], second["access_token"], first["refresh_token"], second["refresh_token"]]

    # Client credentials.
    conf = msal.ConfidentialClientApplication(APP_ID, client_credential=APP_SECRET, authority=emu.authority)
    app_token = conf.acquire_token_for_client(["https://vault.azure.net/.default"])
    assert "access_token" in app_token, app_token
    emu.minted.append(app_token["access_token"])
    c = verify_jwt(emu, app_token["access_token"], "https://vault.azure.net")
    assert c["appid"] == APP_ID and c["idtyp"] == "app" and "scp" not in c


def test_refusals_unknown_instance_wrong_ca_and_hosts_the_proxy_does_not_serve(emu, tmp_path):
    import pytest

    # Instance discovery vouches only for the emulated cloud's host.
    r = requests.get(
        f"{emu.entra}/common/discovery/instance",
        params={"api-version": "1.1", "authorization_endpoint": "https://login.example.invalid/x/oauth2/v2.0/authorize"},
        verify=emu.ca,
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_instance"
    # Trusting the public roots instead of the emulator's CA, TLS fails: nothing is disabled.
    import certifi

    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{emu.authority}/v2.0/.well-known/openid-configuration", verify=certifi.where(), timeout=10)
    # The proxy never reaches the network: hosts it does not emulate, other ports and plain-http proxying
    # are refused (403) before anything is opened.
    for url in ("https://example.com/", "https://login.microsoftonline.com:8443/common/v2.0/.well-known/openid-configuration"):
        with pytest.raises(requests.exceptions.ProxyError, match="403"):
            requests.get(url, timeout=10)
    r = requests.get("http://example.com/", proxies={"http": emu.proxy}, timeout=10)
    assert r.status_code == 403 and "only tunnels HTTPS" in r.text


def test_azure_identity_client_secret_and_device_code(emu):
    # Exactly as against Azure: tenant, client, secret; the default authority is login.microsoftonline.com.
    cred = ClientSecretCredential(emu.tenant, APP_ID, APP_SECRET)
    tok = cred.get_token("https://vault.azure.net/.default")
    emu.minted.append(tok.token)
    assert verify_jwt(emu, tok.token, "https://vault.azure.net")["appid"] == APP_ID

    prompted = []

    def approve(verification_uri, user_code, expires_on):
        prompted.append(verification_uri)
        emu.approve(user_code, ALICE)

    dc = DeviceCodeCredential(client_id=CLIENT_ID, tenant_id=emu.tenant, prompt_callback=approve)
    t = dc.get_token(*PAT_SCOPES)
    emu.minted.append(t.token)
    assert prompted == ["https://microsoft.com/devicelogin"]
    c = verify_jwt(emu, t.token, DEVOPS)
    assert c["upn"] == ALICE
    # The credential's cached account refreshes silently.
    t2 = dc.get_token(*PAT_SCOPES)
    assert t2.token == t.token or t2.expires_on >= t.expires_on
