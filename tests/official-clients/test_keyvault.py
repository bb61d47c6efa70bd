"""azure-keyvault-secrets against the emulated Key Vault at its Azure URL (https://<vault>.vault.azure.net,
through the emulator's proxy): the whole secret lifecycle with a client-secret credential from the emulated
Entra, only the emulator's CA trusted and the SDK's challenge-resource check on."""

import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from conftest import APP_ID, APP_SECRET


def client(emu):
    # As against Azure: no authority, no disabled check (the CA and the proxy come from the environment).
    # The SDK checks that the vault's host is a subdomain of the challenge's resource (vault.azure.net).
    return SecretClient(emu.keyvault, ClientSecretCredential(emu.tenant, APP_ID, APP_SECRET))


def test_secret_lifecycle(emu):
    c = client(emu)
    value1, value2 = "official-clients-value-one-9f8e7d", "official-clients-value-two-1a2b3c"
    emu.minted += [value1, value2]
    expires = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=30)
    s1 = c.set_secret("sdk-lifecycle", value1, content_type="text/plain", tags={"owner": "tests"}, expires_on=expires)
    assert s1.value == value1 and s1.properties.version
    # Identifiers name the vault's Azure URL, as the service does.
    assert s1.id.startswith(f"{emu.keyvault}secrets/sdk-lifecycle/") and s1.properties.vault_url == emu.keyvault.rstrip("/")
    s2 = c.set_secret("sdk-lifecycle", value2)
    assert c.get_secret("sdk-lifecycle").value == value2
    assert c.get_secret("sdk-lifecycle", s1.properties.version).value == value1
    versions = {p.version for p in c.list_properties_of_secret_versions("sdk-lifecycle")}
    assert versions == {s1.properties.version, s2.properties.version}
    assert "sdk-lifecycle" in {p.name for p in c.list_properties_of_secrets()}

    updated = c.update_secret_properties("sdk-lifecycle", s1.properties.version, enabled=False, tags={"state": "old"})
    assert updated.enabled is False and updated.tags == {"state": "old"}

    # result() does not wait in this SDK; wait() polls until the (asynchronous) delete finished.
    poller = c.begin_delete_secret("sdk-lifecycle")
    poller.wait()
    deleted = poller.result()
    assert deleted.name == "sdk-lifecycle" and deleted.recovery_id
    assert c.get_deleted_secret("sdk-lifecycle").name == "sdk-lifecycle"
    assert "sdk-lifecycle" in {d.name for d in c.list_deleted_secrets()}
    try:
        c.get_secret("sdk-lifecycle")
        raise AssertionError("a deleted secret must not be readable")
    except ResourceNotFoundError:
        pass
    poller = c.begin_recover_deleted_secret("sdk-lifecycle")
    poller.wait()
    recovered = poller.result()
    assert recovered.name == "sdk-lifecycle"
    assert c.get_secret("sdk-lifecycle").value == value2

    c.begin_delete_secret("sdk-lifecycle").wait()
    c.purge_deleted_secret("sdk-lifecycle")
    try:
        c.get_deleted_secret("sdk-lifecycle")
        raise AssertionError("a purged secret is gone")
    except ResourceNotFoundError:
        pass
