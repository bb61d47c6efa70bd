"""Issue 15 in the templates: two vaults (patrol's own, closed to all but the Function App; the consumer vault
with per-secret roles for the consumers), notification URLs as Key Vault references, an Event Grid topic and
subscription for every consumer vault, silence alerted, and the deployment defects found in review (checked
offline on the parsed templates; the hooks run for real against stub `az` and `azd` commands)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BICEP_FILES, INFRA, REPO, decorators, main, module, props

SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
POSTDEPLOY = INFRA / "hooks" / "postdeploy.sh"
PREPROVISION = INFRA / "hooks" / "preprovision.sh"


# ---- two vaults -----------------------------------------------------------------------------------------------

def test_two_vaults_from_the_same_hardened_module():
    m = main()["modules"]
    for call in ("keyVault", "ownKeyVault"):
        assert m[call]["detail"]["path"] == "modules/keyvault.bicep"
    consumer = props(m["keyVault"])["params"]["keyVaultName"]
    own = props(m["ownKeyVault"])["params"]["keyVaultName"]
    assert consumer != own and "kv-patrol-" in json.dumps(consumer) and "kvp-own-" in json.dumps(own)
    assert props(m["keyVault"])["params"]["createMode"] == "keyVaultCreateMode"
    assert props(m["ownKeyVault"])["params"]["createMode"] == "ownKeyVaultCreateMode"


def test_patrols_own_vault_is_closed_to_all_but_the_function_app():
    """On patrol's own vault: the Function App, and an operator only when explicitly named — nobody else, and
    never a consumer."""
    roles = module("roles")
    on_own = {key: props(res)["properties"]["principalId"] for key, res in roles["resources"].items()
              if res["type"] == "Microsoft.Authorization/roleAssignments" and props(res)["scope"] == "ownVault"}
    assert on_own == {"appOwnSecretsOfficer": "functionAppPrincipalId", "operatorSecretsOfficer": "operatorPrincipalId"}
    assert "operatorPrincipalId" in json.dumps(roles["resources"]["operatorSecretsOfficer"]["config"]["condition"])
    assert roles["parameters"]["operatorPrincipalId"]["default"] == ""
    # consumers only ever get roles through consumer-access, on the consumer vault
    calls = main()["modules"]
    assert props(calls["consumerAccess"])["params"]["keyVaultName"] == "keyVault.outputs.keyVaultName"
    assert "ownKeyVault" not in json.dumps(calls["consumerAccess"])


def test_consumers_get_secrets_user_on_each_secret_never_the_vault():
    doc = module("consumer-access")
    assert doc["variables"]["keyVaultSecretsUser"]["value"] == SECRETS_USER
    grant = doc["resources"]["secretReader"]
    cfg = props(grant)
    assert cfg["scope"] == {"operator": {"type": "index_accessor", "operands": {"operand_1": "secrets", "operand_2": "i"}}}, \
        "the role is scoped to one secret"
    assert doc["resources"]["secrets"]["type"] == "Microsoft.KeyVault/vaults/secrets"
    # the assignment name covers vault, secret and principal: one per (principal, secret)
    assert {"vault.id", "name", "principalId", "keyVaultSecretsUser"} <= set(cfg["name"]["function"]["parameters"].values())
    text = (INFRA / "modules" / "consumer-access.bicep").read_text()
    assert SECRETS_OFFICER not in text and "scope: vault\n" not in text
    # main: one module per consumer, from the parameter
    call = main()["modules"]["consumerAccess"]
    assert "consumerPrincipals" in json.dumps(call) and main()["parameters"]["consumerPrincipals"]["type"] == "array"


def test_notification_urls_are_key_vault_references_never_values():
    variables = module("functionapp")["variables"]
    refs = json.dumps(variables["notificationSettings"]["value"])
    for setting, secret in (("PATROL_TEAMS_WEBHOOK_URL", "patrol-teams-webhook-url"),
                            ("PATROL_SLACK_WEBHOOK_URL", "patrol-slack-webhook-url"),
                            ("PATROL_WEBHOOK_URL", "patrol-webhook-url")):
        assert setting in refs
        assert f"@Microsoft.KeyVault(VaultName=${{ownKeyVaultName}};SecretName={secret})" in refs
    # no template parameter can carry a URL or a secret value into the deployment history
    for path in BICEP_FILES:
        from conftest import parse_bicep
        for name, param in parse_bicep(path).get("parameters", {}).items():
            assert "secure" not in decorators(param), f"{path.name}: @secure() parameter {name}"
            assert "webhook" not in name.lower() and "url" not in name.lower().replace("uri", ""), (path.name, name)
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert not [k for k, v in given.items() if "WEBHOOK" in json.dumps(v)]
    # the reference wins over anything in additionalAppSettings (merged first)
    assert variables["allSettings"]["value"]["function"]["parameters"]["arg_1"] == "additionalAppSettings"
    assert variables["allSettings"]["value"]["function"]["parameters"]["arg_5"] == "notificationSettings"


# ---- Event Grid on every consumer vault -----------------------------------------------------------------------

def test_every_consumer_vault_has_a_topic_and_a_subscription():
    m = main()
    calls = m["modules"]
    assert props(calls["eventGridTopic"])["params"]["keyVaultId"] == "keyVault.outputs.keyVaultId"
    for call in ("externalVaultAccess", "externalTopics", "externalEventSubscriptions"):
        assert "externalConsumerVaults" in json.dumps(calls[call]), call
    assert "deployEventSubscription" in json.dumps(calls["externalEventSubscriptions"])
    assert calls["externalTopics"]["detail"]["path"] == "modules/eventgrid-topic.bicep"
    assert calls["externalEventSubscriptions"]["detail"]["path"] == "modules/eventgrid-subscription.bicep"
    # patrol may write the PATs into a team's vault (Secrets Officer on that vault only)
    officer = module("vault-officer")
    assert props(officer["resources"]["appSecretsOfficer"])["scope"] == "vault"
    assert officer["variables"]["keyVaultSecretsOfficer"]["value"] == SECRETS_OFFICER
    # every topic may dead-letter, and the hook is told about every topic
    roles_params = json.dumps(props(calls["roles"])["params"]["eventGridTopicPrincipalIds"])
    assert "eventGridTopic.outputs.principalId" in roles_params and "externalTopicPrincipalIds" in roles_params
    out = json.dumps(m["outputs"]["AZURE_EVENTGRID_TOPICS"])
    assert "eventGridTopic.outputs.topicName" in out and "externalTopicRefs" in out
    # nothing subscribes patrol's own vault: its events are not patrol's business
    assert "ownKeyVault" not in json.dumps(calls["eventGridTopic"]) + json.dumps(calls["externalTopics"])


def test_event_grid_delivery_failures_are_logged():
    diag = props(module("eventgrid-topic")["resources"]["deliveryFailures"])
    assert diag["scope"] == "topic"
    assert {"category": "DeliveryFailures", "enabled": True} in diag["properties"]["logs"]
    assert diag["properties"]["workspaceId"] == "workspaceId"


def test_silence_is_alerted():
    doc = module("alerts")
    rule = props(doc["resources"]["rotateTimerSilence"])
    assert doc["resources"]["rotateTimerSilence"]["type"] == "Microsoft.Insights/scheduledQueryRules"
    crit = rule["properties"]["criteria"]["allOf"][0]
    # Successful RotateTimer runs, counted from patrol's own `patrol.invocations` metric (docs/metrics.md): a
    # failed run, or metrics that stop arriving, both leave the count at zero and fire the alert.
    q = crit["query"]
    assert "RotateTimer" in q and "patrol.invocations" in q and "silenceHours" in q
    assert '"completed"' in q and '"failed"' not in q and '"error"' not in q
    assert (crit["timeAggregation"], crit["operator"], crit["threshold"]) == ("Count", "LessThan", 1)
    assert doc["parameters"]["silenceHours"]["default"] == 26
    assert rule["properties"]["scopes"] == ["appInsightsId"]
    assert rule["properties"]["evaluationFrequency"] == "PT1H"


# ---- deployment defects ---------------------------------------------------------------------------------------

def test_operator_is_a_dedicated_parameter_not_azds_signed_in_principal():
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["operatorPrincipalId"]["value"] == "${PATROL_OPERATOR_PRINCIPAL_ID=}"
    assert "AZURE_PRINCIPAL_ID" not in (INFRA / "main.parameters.json").read_text()


def test_parameters_file_maps_every_parameter_and_location_has_azd_metadata():
    given = set(json.loads((INFRA / "main.parameters.json").read_text())["parameters"])
    assert given == set(main()["parameters"])
    meta = decorators(main()["parameters"]["location"])["metadata"]
    assert meta == {"azd": {"type": "location"}}


def test_azure_yaml_requires_an_azd_that_keeps_file_modes_and_runs_both_hooks():
    doc = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert doc["requiredVersions"]["azd"].startswith(">=")
    assert "infra/hooks/preprovision.sh" in doc["hooks"]["preprovision"]["posix"]["run"]
    assert "infra/hooks/postdeploy.sh" in doc["hooks"]["postdeploy"]["posix"]["run"]


# ---- the hooks, run for real against stub az / azd ------------------------------------------------------------

AZ_STUB = r'''#!/usr/bin/env bash
printf '%s\n' "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")" >> "$FAKE_LOG"
case "$1 $2 $3" in
  "functionapp function show")
    n=$(cat "$FAKE_DIR/show-count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$FAKE_DIR/show-count"
    [ "$n" -gt "${FAKE_INDEX_AFTER:-0}" ] && { echo EventGridSecretChanged; exit 0; }
    echo "ERROR: function not found" >&2; exit 3 ;;
  "eventgrid system-topic event-subscription") exit "${FAKE_CREATE_RC:-0}" ;;
  "provider show --namespace") echo "${FAKE_PROVIDER_STATE:-Registered}"; exit 0 ;;
  "provider register --namespace") exit 0 ;;
  "keyvault show --name") case " ${FAKE_LIVE:-} " in *" $4 "*) echo "$4"; exit 0 ;; esac; exit 3 ;;
  "keyvault show-deleted --name") case " ${FAKE_DELETED:-} " in *" $4 "*) echo "$4"; exit 0 ;; esac; exit 3 ;;
esac
echo "fake az: unexpected: $*" >&2; exit 2
'''
AZD_STUB = '#!/usr/bin/env bash\nprintf "%s\\n" "azd $*" >> "$FAKE_LOG"\n'


def run(hook: Path, tmp: Path, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    for name, text in (("az", AZ_STUB), ("azd", AZD_STUB)):
        (tmp / name).write_text(text)
        (tmp / name).chmod(0o755)
    log = tmp / "calls.log"
    log.unlink(missing_ok=True)
    (tmp / "show-count").unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KEYVAULT_", "VNET_", "EVENT_"))}
    r = subprocess.run(["bash", str(hook)], capture_output=True, text=True, timeout=60,
                       env={**base, "PATH": f"{tmp}:{os.environ['PATH']}", "FAKE_LOG": str(log),
                            "FAKE_DIR": str(tmp), "PATROL_HOOK_DELAY": "0", **env})
    calls = []
    for line in (log.read_text().splitlines() if log.exists() else []):
        calls.append(line.split() if line.startswith("azd ") else json.loads(line))
    return r, calls


DEPLOYED = {
    "AZURE_RESOURCE_GROUP": "rg-prod", "AZURE_FUNCTION_APP_NAME": "func-patrol-x",
    "AZURE_FUNCTION_APP_ID": "/subscriptions/s1/resourceGroups/rg-prod/providers/Microsoft.Web/sites/func-patrol-x",
    "AZURE_EVENTGRID_TOPICS": "s1/rg-prod/evgt-patrol-x s2/rg-team-a/evgt-patrol-x-kv-team-a",
    "AZURE_STORAGE_ACCOUNT_ID": "/subscriptions/s1/resourceGroups/rg-prod/providers/Microsoft.Storage/storageAccounts/st",
    "AZURE_DEAD_LETTER_CONTAINER": "eventgrid-deadletter", "EVENT_SUBSCRIPTION_DEPLOYED": "false",
}


def flag(argv: list[str], name: str) -> list[str]:
    i = argv.index(name)
    out = []
    for a in argv[i + 1:]:
        if a.startswith("--"):
            break
        out.append(a)
    return out


def test_postdeploy_waits_for_indexing_then_subscribes_every_topic_like_the_template(tmp_path):
    r, calls = run(POSTDEPLOY, tmp_path, **DEPLOYED, FAKE_INDEX_AFTER="2", PATROL_HOOK_ATTEMPTS="5")
    assert r.returncode == 0, r.stderr
    shows = [c for c in calls if isinstance(c, list) and c[:3] == ["functionapp", "function", "show"]]
    assert len(shows) == 3, "waited until the function was indexed"
    creates = [c for c in calls if isinstance(c, list) and c[:4] == ["eventgrid", "system-topic", "event-subscription", "create"]]
    assert [(flag(c, "--subscription"), flag(c, "--resource-group"), flag(c, "--system-topic-name")) for c in creates] == [
        (["s1"], ["rg-prod"], ["evgt-patrol-x"]), (["s2"], ["rg-team-a"], ["evgt-patrol-x-kv-team-a"])]
    sub = module("eventgrid-subscription")
    spec = props(sub["resources"]["subscription"])["properties"]
    for c in creates:
        assert flag(c, "--name") == [sub["parameters"]["subscriptionName"]["default"]]
        assert flag(c, "--endpoint-type") == ["azurefunction"]
        assert flag(c, "--endpoint") == [DEPLOYED["AZURE_FUNCTION_APP_ID"] + "/functions/" + sub["parameters"]["functionName"]["default"]]
        assert flag(c, "--included-event-types") == sub["variables"]["secretEventTypes"]["value"]
        assert flag(c, "--max-events-per-batch") == [str(spec["destination"]["properties"]["maxEventsPerBatch"])]
        assert flag(c, "--preferred-batch-size-in-kilobytes") == [str(spec["destination"]["properties"]["preferredBatchSizeInKilobytes"])]
        assert flag(c, "--max-delivery-attempts") == [str(sub["parameters"]["maxDeliveryAttempts"]["default"])]
        assert flag(c, "--event-ttl") == [str(sub["parameters"]["eventTimeToLiveInMinutes"]["default"])]
        assert flag(c, "--deadletter-identity") == ["systemassigned"]
        assert flag(c, "--deadletter-identity-endpoint") == [
            DEPLOYED["AZURE_STORAGE_ACCOUNT_ID"] + "/blobServices/default/containers/eventgrid-deadletter"]
    azd = [c for c in calls if c[0] == "azd"]
    assert azd == [["azd", "env", "set", "DEPLOY_EVENT_SUBSCRIPTION", "true"]], "no nested azd provision"


def test_postdeploy_gives_up_after_a_bounded_wait_and_says_how_to_resume(tmp_path):
    r, calls = run(POSTDEPLOY, tmp_path, **DEPLOYED, FAKE_INDEX_AFTER="99", PATROL_HOOK_ATTEMPTS="4")
    assert r.returncode == 1
    assert "not indexed after 4 tries" in r.stderr and "azd hooks run postdeploy" in r.stderr
    assert len(calls) == 4 and not [c for c in calls if c[0] == "azd"]


def test_postdeploy_retries_a_failing_create_a_bounded_number_of_times(tmp_path):
    r, calls = run(POSTDEPLOY, tmp_path, **DEPLOYED, FAKE_CREATE_RC="1", PATROL_HOOK_ATTEMPTS="3")
    assert r.returncode == 1 and "after 3 tries" in r.stderr
    creates = [c for c in calls if isinstance(c, list) and c[:2] == ["eventgrid", "system-topic"]]
    assert len(creates) == 3 and not [c for c in calls if c[0] == "azd"]


def test_postdeploy_names_missing_environment_values(tmp_path):
    r, calls = run(POSTDEPLOY, tmp_path, EVENT_SUBSCRIPTION_DEPLOYED="false")
    assert r.returncode == 1 and "AZURE_EVENTGRID_TOPICS" in r.stderr and calls == []


@pytest.mark.parametrize("env", [{"VNET_INTEGRATION": "true"}, {"KEYVAULT_PUBLIC_NETWORK_ACCESS": "Disabled"},
                                 {"KEYVAULT_ALLOWED_IP_RANGES": '["203.0.113.7"]'}])
def test_preprovision_registers_microsoft_app_for_vnet_integration(tmp_path, env):
    r, calls = run(PREPROVISION, tmp_path, FAKE_PROVIDER_STATE="NotRegistered", **env)
    assert r.returncode == 0, r.stderr
    assert ["provider", "register", "--namespace", "Microsoft.App", "--wait"] in calls


def test_preprovision_leaves_providers_alone_without_vnet_or_when_registered(tmp_path):
    r, calls = run(PREPROVISION, tmp_path, FAKE_PROVIDER_STATE="NotRegistered")
    assert r.returncode == 0 and not [c for c in calls if c[0] == "provider"]
    r, calls = run(PREPROVISION, tmp_path, FAKE_PROVIDER_STATE="Registered", VNET_INTEGRATION="true")
    assert r.returncode == 0 and not [c for c in calls if c[:2] == ["provider", "register"]]


def test_preprovision_recovers_soft_deleted_vaults_after_azd_down(tmp_path):
    names = {"AZURE_KEY_VAULT_NAME": "kv-patrol-abc", "AZURE_OWN_KEY_VAULT_NAME": "kvp-own-abc"}
    r, calls = run(PREPROVISION, tmp_path, **names, FAKE_DELETED="kv-patrol-abc kvp-own-abc")
    assert r.returncode == 0, r.stderr
    azd = [c for c in calls if c[0] == "azd"]
    assert azd == [["azd", "env", "set", "KEYVAULT_CREATE_MODE", "recover"],
                   ["azd", "env", "set", "OWN_KEYVAULT_CREATE_MODE", "recover"]]
    assert "recovering" in r.stdout
    # live vaults: back to default (only what changed is set)
    r, calls = run(PREPROVISION, tmp_path, **names, FAKE_LIVE="kv-patrol-abc kvp-own-abc",
                   KEYVAULT_CREATE_MODE="recover", OWN_KEYVAULT_CREATE_MODE="default")
    assert [c for c in calls if c[0] == "azd"] == [["azd", "env", "set", "KEYVAULT_CREATE_MODE", "default"]]
    # a new suffix means new names: nothing to recover
    r, calls = run(PREPROVISION, tmp_path, **names, FAKE_DELETED="kv-patrol-abc kvp-own-abc", KEYVAULT_NAME_SUFFIX="b2")
    assert r.returncode == 0 and not [c for c in calls if c[0] == "azd"]
    # first deployment: no names yet, nothing asked
    r, calls = run(PREPROVISION, tmp_path)
    assert r.returncode == 0 and calls == []


def test_recovery_reaches_the_template():
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["keyVaultCreateMode"]["value"] == "${KEYVAULT_CREATE_MODE=default}"
    assert given["ownKeyVaultCreateMode"]["value"] == "${OWN_KEYVAULT_CREATE_MODE=default}"
    vault = props(module("keyvault")["resources"]["vault"])["properties"]
    assert vault["createMode"] == "createMode"
    assert decorators(module("keyvault")["parameters"]["createMode"])["allowed"] == ["default", "recover"]
    outputs = main()["outputs"]
    for name in ("AZURE_KEY_VAULT_NAME", "AZURE_OWN_KEY_VAULT_NAME", "KEYVAULT_NAME_SUFFIX_USED"):
        assert name in outputs
