"""Offline validation of infra/: every .bicep file parses with pycep, and the parsed templates have the
properties a security review asks for (identity, least-privilege roles, HTTPS/TLS, diagnostics, event filter,
the two-pass Event Grid subscription) and are consistent with each other (module parameters, outputs)."""
from __future__ import annotations

import json
import re

import pytest

from conftest import (BICEP_FILES, INFRA, REPO, conditional, decorators, main, module, parse_bicep, parse_bicep_raw,
                      props)

ROLE = {
    "keyVaultSecretsOfficer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
}
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",  # User Access Administrator
    "00482a5a-887f-4fb3-b363-3b7fe8e74483",  # Key Vault Administrator
    "17d1049b-9a84-46fb-8f53-869881c3d3ab",  # Storage Account Contributor
}
FLEX_REJECTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
    "WEBSITE_TIME_ZONE",
}
SECRET_EVENT_TYPES = [
    "Microsoft.KeyVault.SecretNewVersionCreated",
    "Microsoft.KeyVault.SecretNearExpiry",
    "Microsoft.KeyVault.SecretExpired",
]


def patrol_settings() -> set[str]:
    """The setting names of src/config.rs SETTINGS."""
    text = (REPO / "src" / "config.rs").read_text()
    block = text[text.index("pub const SETTINGS"):text.index("];", text.index("pub const SETTINGS"))]
    return set(re.findall(r'name:\s*"([A-Z0-9_]+)"', block))


# ---- parsing and module hygiene ------------------------------------------------------------------------------

def test_every_expected_template_exists():
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "modules/consumer-access.bicep", "modules/vault-officer.bicep", "modules/functionapp.bicep", "modules/storage.bicep", "modules/keyvault.bicep",
            "modules/monitoring.bicep", "modules/roles.bicep", "modules/eventgrid-topic.bicep",
            "modules/eventgrid-subscription.bicep", "modules/alerts.bicep", "modules/network.bicep",
            "modules/observability.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_parses_and_documents_every_parameter(path):
    doc = parse_bicep(path)
    assert doc.get("resources") or doc.get("modules"), f"{path} declares nothing"
    for name, param in doc.get("parameters", {}).items():
        decos = decorators(param)
        assert decos.get("description"), f"{path.name}: parameter {name} has no @description"
        if "allowed" in decos:
            default = param.get("default")
            # an array parameter's @allowed applies to each element
            values = default if param.get("type") == "array" and isinstance(default, list) else [default]
            assert default is None or all(v in decos["allowed"] for v in values), f"{path.name}: {name} default not allowed"
    for name, output in doc.get("outputs", {}).items():
        if path.name != "main.bicep":  # main's outputs are azd environment values, named by azd convention
            assert decorators(output).get("description"), f"{path.name}: output {name} has no @description"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_file_opens_with_a_comment_saying_what_it_owns(path):
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("//") and len(first) > 20, path


def test_module_calls_match_module_parameters():
    """What a Bicep compiler would refuse: unknown parameters and missing required ones."""
    calls = main()["modules"]
    referenced = set()
    for call_name, call in calls.items():
        cfg = props(call)
        path = (INFRA / call["detail"]["path"]).resolve()
        referenced.add(path)
        target = parse_bicep(path)["parameters"]
        passed = set(cfg["params"])
        assert passed <= set(target), f"module {call_name} passes unknown parameters {passed - set(target)}"
        required = {n for n, p in target.items() if p.get("default") is None}  # pycep: None = no default
        assert required <= passed, f"module {call_name} misses required parameters {required - passed}"
    modules = {p.resolve() for p in (INFRA / "modules").glob("*.bicep")}
    assert modules == referenced, f"modules not used by main.bicep: {modules - referenced}"


def test_module_outputs_used_by_main_exist():
    text = (INFRA / "main.bicep").read_text()
    for mod, out in set(re.findall(r"\b(\w+)\.outputs\.(\w+)", text)):
        call = main()["modules"][mod]
        outputs = parse_bicep((INFRA / call["detail"]["path"]).resolve())["outputs"]
        assert out in outputs, f"main.bicep uses {mod}.outputs.{out}, which {call['path']} does not declare"


# ---- the Function App -----------------------------------------------------------------------------------------

def test_function_app_flex_custom_handler_identity_https_tls():
    doc = module("functionapp")
    site = props(doc["resources"]["functionApp"])
    assert site["kind"] == "functionapp,linux"
    assert site["identity"] == {"type": "SystemAssigned"}
    p = site["properties"]
    assert p["httpsOnly"] is True
    sc = p["siteConfig"]
    assert sc["minTlsVersion"] == "1.2" and sc["scmMinTlsVersion"] == "1.2"
    # properties Flex Consumption deprecated are not set
    assert "ftpsState" not in sc and "vnetRouteAllEnabled" not in sc
    flex = p["functionAppConfig"]
    assert flex["runtime"] == {"name": "custom", "version": "1.0"}
    storage = flex["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}
    assert "deploymentContainerName" in storage["value"]


def test_plan_is_flex_consumption_only():
    """The Elastic Premium fallback is gone: on Linux Premium, run-from-package needs an Azure Files content share,
    which needs an account key, and shared keys are disabled (WEBSITE_RUN_FROM_PACKAGE=1 alone does not work)."""
    doc = module("functionapp")
    plan = props(doc["resources"]["plan"])
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True  # Linux
    assert "hostingPlan" not in doc["parameters"] and "hostingPlan" not in main()["parameters"]
    for path in BICEP_FILES:
        text = path.read_text()
        assert "WEBSITE_RUN_FROM_PACKAGE" not in text and "ElasticPremium" not in text, path.name


def test_app_settings_use_patrol_names_and_identity_based_storage():
    variables = module("functionapp")["variables"]
    base = variables["baseSettings"]["value"]
    assert base["AzureWebJobsStorage__accountName"] == "storageAccountName"
    assert "AzureWebJobsStorage" not in base, "no connection string: the host storage is identity-based"
    known = patrol_settings()
    names = set(base)
    for var in ("clientIdSetting", "aadTelemetrySetting"):
        _, t, f = conditional(variables[var]["value"])
        names |= set(t) | set(f)
    for arg in variables["notificationSettings"]["value"]["function"]["parameters"].values():
        _, t, f = conditional(arg)
        names |= set(t) | set(f)
    for name in names:
        if name.startswith("PATROL_"):
            # PATROL_OWN_KEYVAULT_URL comes with the code side of issue 15 (patrol's own vault)
            assert name in known | {"PATROL_OWN_KEYVAULT_URL"}, f"{name} is not a setting of src/config.rs SETTINGS"
    for needed in ("PATROL_KEYVAULT_URL", "PATROL_OWN_KEYVAULT_URL", "PATROL_SCHEDULE", "PATROL_POLICY_FILE",
                   "PATROL_TENANT_ID"):
        assert needed in names
    assert base["PATROL_KEYVAULT_URL"] == "keyVaultUri" and base["PATROL_OWN_KEYVAULT_URL"] == "ownKeyVaultUri"
    assert base["PATROL_KEYVAULT_CREDENTIAL"] == "managed-identity"
    assert not names & FLEX_REJECTED_SETTINGS, "settings Flex Consumption rejects"
    # additionalAppSettings is merged first, so it cannot override patrol's settings or the references
    union = variables["allSettings"]["value"]["function"]["parameters"]
    assert union["arg_1"] == "additionalAppSettings"


def test_basic_auth_publishing_is_disabled():
    res = module("functionapp")["resources"]
    for key in ("ftpCredentials", "scmCredentials"):
        assert props(res[key])["properties"] == {"allow": False}


# ---- storage and Key Vault ------------------------------------------------------------------------------------

def test_storage_refuses_shared_keys_and_plain_http():
    res = module("storage")["resources"]
    p = props(res["storage"])["properties"]
    assert p["allowSharedKeyAccess"] is False
    assert p["allowBlobPublicAccess"] is False
    assert p["minimumTlsVersion"] == "TLS1_2"
    assert p["supportsHttpsTrafficOnly"] is True
    for c in ("deploymentContainer", "deadLetterContainer"):
        assert props(res[c])["properties"]["publicAccess"] == "None"


def test_key_vault_rbac_soft_delete_purge_protection_network_option():
    doc = module("keyvault")
    p = props(doc["resources"]["vault"])["properties"]
    assert p["enableRbacAuthorization"] is True
    assert p["enableSoftDelete"] is True
    assert p["enablePurgeProtection"] is True
    assert "accessPolicies" not in p
    assert p["publicNetworkAccess"] == "publicNetworkAccess"
    assert decorators(doc["parameters"]["publicNetworkAccess"])["allowed"] == ["Enabled", "Disabled"]
    cond, deny, allow = conditional(p["networkAcls"]["defaultAction"])
    assert (cond, deny, allow) == ("restricted", "Deny", "Allow")
    assert "allowedIpRanges" in json.dumps(doc["variables"]["restricted"]), "IP ranges turn the firewall on"


def test_key_vault_audit_events_go_to_log_analytics():
    diag = props(module("keyvault")["resources"]["auditLogs"])
    assert diag["scope"] == "vault"
    assert diag["properties"]["workspaceId"] == "workspaceId"
    assert {"category": "AuditEvent", "enabled": True} in diag["properties"]["logs"]
    keyvault_call = props(main()["modules"]["keyVault"])["params"]
    assert keyvault_call["workspaceId"] == "monitoring.outputs.workspaceId"


def test_app_insights_is_workspace_based():
    res = module("monitoring")["resources"]
    p = props(res["appInsights"])["properties"]
    assert p["WorkspaceResourceId"] == "workspace.id"
    assert p["DisableLocalAuth"] == "disableLocalAuth"


# ---- role assignments -----------------------------------------------------------------------------------------

def role_assignments():
    doc = module("roles")
    out = {}
    for key, res in doc["resources"].items():
        if res["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        cfg = props(res)
        rd = cfg["properties"]["roleDefinitionId"]["function"]["parameters"]
        role_var = [v for v in rd.values() if v != "Microsoft.Authorization/roleDefinitions"][0]
        out[key] = (doc["variables"][role_var]["value"], cfg["scope"], cfg["properties"]["principalId"])
    return out


def test_least_privilege_role_assignments():
    got = role_assignments()
    assert got["appSecretsOfficer"] == (ROLE["keyVaultSecretsOfficer"], "vault", "functionAppPrincipalId")
    assert got["appOwnSecretsOfficer"] == (ROLE["keyVaultSecretsOfficer"], "ownVault", "functionAppPrincipalId")
    assert got["appQueueContributor"] == (ROLE["storageQueueDataContributor"], "storage", "functionAppPrincipalId")
    assert got["appTableContributor"] == (ROLE["storageTableDataContributor"], "storage", "functionAppPrincipalId")
    assert got["appBlobOwner"] == (ROLE["storageBlobDataOwner"], "storage", "functionAppPrincipalId")
    assert got["appMetricsPublisher"] == (ROLE["monitoringMetricsPublisher"], "appInsights", "functionAppPrincipalId")
    assert got["topicDeadLetterWriter"] == (ROLE["storageBlobDataContributor"], "deadLetterContainer", "topicPrincipalId")
    # the operator's role is on patrol's own vault only, and only when named
    assert got["operatorSecretsOfficer"] == (ROLE["keyVaultSecretsOfficer"], "ownVault", "operatorPrincipalId")
    # the publisher role only when local auth is off
    assert module("roles")["resources"]["appMetricsPublisher"]["config"]["condition"] == "assignMonitoringPublisher"
    assert props(main()["modules"]["roles"])["params"]["assignMonitoringPublisher"] == "disableAppInsightsLocalAuth"


def test_no_broad_roles_anywhere():
    for path in BICEP_FILES:
        text = path.read_text().lower()
        for role in BROAD_ROLES:
            assert role not in text, f"{path.name} grants a broad role {role}"


def test_role_assignment_names_are_deterministic_guids():
    for key, res in module("roles")["resources"].items():
        if res["type"] == "Microsoft.Authorization/roleAssignments":
            assert props(res)["name"]["function"]["type"] == "guid", key


# ---- Event Grid -----------------------------------------------------------------------------------------------

def test_system_topic_on_the_vault():
    topic = props(module("eventgrid-topic")["resources"]["topic"])
    assert topic["properties"] == {"source": "keyVaultId", "topicType": "Microsoft.KeyVault.vaults"}
    assert topic["identity"] == {"type": "SystemAssigned"}


def test_subscription_delivers_secret_events_to_the_function():
    doc = module("eventgrid-subscription")
    sub = props(doc["resources"]["subscription"])["properties"]
    dest = sub["destination"]
    assert dest["endpointType"] == "AzureFunction"
    assert dest["properties"]["resourceId"] == "${functionAppId}/functions/${functionName}"
    assert doc["parameters"]["functionName"]["default"] == "EventGridSecretChanged"
    assert dest["properties"]["maxEventsPerBatch"] == 1
    assert sub["filter"]["includedEventTypes"] == "secretEventTypes"
    assert doc["variables"]["secretEventTypes"]["value"] == SECRET_EVENT_TYPES
    assert sub["filter"]["subjectBeginsWith"] == "subjectPrefix"
    assert sub["retryPolicy"] == {"maxDeliveryAttempts": "maxDeliveryAttempts",
                                  "eventTimeToLiveInMinutes": "eventTimeToLiveInMinutes"}
    attempts = decorators(doc["parameters"]["maxDeliveryAttempts"])
    ttl = decorators(doc["parameters"]["eventTimeToLiveInMinutes"])
    assert (attempts["min_value"], attempts["max_value"], ttl["min_value"], ttl["max_value"]) == (1, 30, 1, 1440)
    dl = sub["deadLetterWithResourceIdentity"]
    assert dl["identity"] == {"type": "SystemAssigned"}
    assert dl["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert dl["deadLetterDestination"]["properties"]["blobContainerName"] == "deadLetterContainerName"


def test_subscription_is_a_second_pass():
    m = main()
    param = m["parameters"]["deployEventSubscription"]
    assert param["type"] == "bool" and param["default"] is False
    call = m["modules"]["eventSubscription"]
    assert call["config"]["condition"] == "deployEventSubscription"
    # the topic itself is unconditional (it can exist before the function does)
    assert "condition" not in m["modules"]["eventGridTopic"]["config"] or m["modules"]["eventGridTopic"]["config"].get("condition") is None


# ---- alerts ---------------------------------------------------------------------------------------------------

def test_alerts_for_failed_invocations_and_dead_letters():
    res = module("alerts")["resources"]
    def metric(key):
        crit = props(res[key])["properties"]["criteria"]["allOf"][0]
        return crit["metricNamespace"], crit["metricName"], crit["operator"], crit["threshold"]
    assert metric("failedInvocations") == ("microsoft.insights/components", "requests/failed", "GreaterThan", 0)
    assert metric("deadLettered") == ("Microsoft.EventGrid/systemTopics", "DeadLetteredCount", "GreaterThan", 0)
    assert props(res["deadLettered"])["properties"]["scopes"] == ["eventGridTopicId"]
    params = props(main()["modules"]["alerts"])["params"]
    assert params["eventGridTopicId"] == "eventGridTopic.outputs.topicId"


def patrol_metric_names() -> set[str]:
    """The instruments of src/metrics/mod.rs (docs/metrics.md)."""
    text = (REPO / "src" / "metrics" / "mod.rs").read_text()
    return set(re.findall(r'def!\(\s*[A-Z_]+,\s*"([a-z._]+)"', text))


def test_workbook_and_alert_rules_query_patrols_real_metrics():
    known = patrol_metric_names()
    assert {"patrol.pat.expiry.remaining", "patrol.invocations", "patrol.token.rotation.failures"} <= known
    for name in ("observability", "alerts"):
        text = (INFRA / "modules" / f"{name}.bicep").read_text()
        used = set(re.findall(r'name == "([a-z._]+)"', text))
        assert used, name
        assert used <= known, f"{name}.bicep queries metrics patrol does not export: {used - known}"


def test_workbook_shows_expiry_rotations_failures_findings():
    res = module("observability")["resources"]
    wb = props(res["workbook"])
    assert wb["kind"] == "shared"
    p = wb["properties"]
    assert p["category"] == "workbook" and p["sourceId"] == "appInsightsId"
    text = (INFRA / "modules" / "observability.bicep").read_text()
    for metric in ("patrol.pat.expiry.remaining", "patrol.run.tokens", "patrol.token.rotation.failures",
                   "patrol.audit.findings", "patrol.owner.sign_in_required"):
        assert f'name == "{metric}"' in text, metric


def test_metric_alerts_last_day_failing_twice_and_silence():
    m = module("observability")
    params = m["parameters"]
    assert params["lastDaySeconds"]["default"] == 86400
    assert params["failingRuns"]["default"] == 2
    res = m["resources"]
    text = (INFRA / "modules" / "observability.bicep").read_text()
    for key in ("lastDay", "failing"):
        p = props(res[key])["properties"]
        assert p["scopes"] == ["appInsightsId"]
        crit = p["criteria"]["allOf"][0]
        assert crit["operator"] == "GreaterThan" and crit["threshold"] == 0
        assert crit["dimensions"][0]["name"] == "secret", "one alert per token"
    assert 'where state in ("current", "failing")' in text and "where value < ${lastDaySeconds}" in text
    assert "where runs >= ${failingRuns}" in text
    # The silence alert counts patrol's own successful RotateTimer invocations.
    alerts = (INFRA / "modules" / "alerts.bicep").read_text()
    assert 'name == "patrol.invocations"' in alerts and '"RotateTimer"' in alerts
    assert module("alerts")["parameters"]["silenceHours"]["default"] == 26
    obs = props(main()["modules"]["observability"])["params"]
    assert obs["appInsightsId"] == "monitoring.outputs.appInsightsId"
    assert obs["actionGroupId"] == "alerts.outputs.actionGroupId"


# ---- parameters file and azd ----------------------------------------------------------------------------------

def test_parameters_file_names_only_real_parameters():
    doc = json.loads((INFRA / "main.parameters.json").read_text())
    declared = main()["parameters"]
    given = doc["parameters"]
    assert set(given) <= set(declared), set(given) - set(declared)
    required = {n for n, p in declared.items() if p.get("default") is None}
    assert required <= set(given), required - set(given)
    assert given["deployEventSubscription"]["value"] == "${DEPLOY_EVENT_SUBSCRIPTION=false}"


def test_main_outputs_for_azd():
    outputs = main()["outputs"]
    for name in ("AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_APP_NAME", "AZURE_KEY_VAULT_NAME", "PATROL_KEYVAULT_URL",
                 "AZURE_LOCATION", "EVENT_SUBSCRIPTION_DEPLOYED"):
        assert name in outputs


@pytest.mark.skipif(not (REPO / "RotateTimer" / "function.json").is_file(), reason="function folders not merged yet")
def test_timer_schedule_setting_is_set_by_the_template():
    schedule = json.loads((REPO / "RotateTimer" / "function.json").read_text())["bindings"][0]["schedule"]
    m = re.fullmatch(r"%(\w+)%", schedule)
    assert m, f"RotateTimer's schedule {schedule!r} is not an app-setting reference"
    assert m.group(1) in module("functionapp")["variables"]["baseSettings"]["value"]


def test_a_closed_vault_brings_vnet_integration_and_a_private_endpoint():
    m = main()
    use_vnet = json.dumps(m["variables"]["useVnet"]["value"])
    for needed in ("vnetIntegration", "keyVaultPublicNetworkAccess", "Disabled", "keyVaultAllowedIpRanges"):
        assert needed in use_vnet
    # both vaults get the same network rules
    for call in ("keyVault", "ownKeyVault"):
        params = props(m["modules"][call])["params"]
        assert params["publicNetworkAccess"] == "keyVaultPublicNetworkAccess"
        assert params["allowedIpRanges"] == "keyVaultAllowedIpRanges"
    assert m["modules"]["network"]["config"]["condition"] == "useVnet"
    cond, on, off = conditional(props(m["modules"]["functionApp"])["params"]["virtualNetworkSubnetId"])
    assert (cond, on, off) == ("useVnet", "network.outputs.appSubnetId", "")
    site = props(module("functionapp")["resources"]["functionApp"])["properties"]
    assert "virtualNetworkSubnetId" in json.dumps(site["virtualNetworkSubnetId"])
    net = module("network")
    pe = props(net["resources"]["vaultEndpoint"])["properties"]
    link = pe["privateLinkServiceConnections"][0]["properties"]
    assert link == {"privateLinkServiceId": "keyVaultId", "groupIds": ["vault"]}
    own = props(net["resources"]["ownVaultEndpoint"])["properties"]["privateLinkServiceConnections"][0]["properties"]
    assert own == {"privateLinkServiceId": "ownKeyVaultId", "groupIds": ["vault"]}
    assert net["variables"]["vaultDnsZone"]["value"] == "privatelink.vaultcore.azure.net"
    assert net["variables"]["delegation"]["value"] == "Microsoft.App/environments"
    for subnet in props(net["resources"]["vnet"])["properties"]["subnets"]:
        assert "networkSecurityGroup" in subnet["properties"], subnet["name"]


def test_integrated_app_has_a_defined_egress():
    net = module("network")
    app_subnet = props(net["resources"]["vnet"])["properties"]["subnets"][0]["properties"]
    cond, on, off = conditional(app_subnet["natGateway"])
    assert (cond, on, off) == ("natGateway", {"id": "nat.id"}, None)
    # without the NAT gateway the subnet keeps default outbound access; with it, nothing else leaves
    assert app_subnet["defaultOutboundAccess"] == {"operator": {"type": "not", "operands": {"bool_value": "natGateway"}}}
    ip = props(net["resources"]["egressIp"])
    assert ip["sku"] == {"name": "Standard"} and ip["properties"]["publicIPAllocationMethod"] == "Static"
    assert props(main()["modules"]["network"])["params"]["natGateway"] == "vnetNatGateway"


# ---- the pinned parser ----------------------------------------------------------------------------------------

def test_pycep_is_the_pinned_version_and_its_accessors_are_rendered():
    """The tests are written against the pycep-parser in requirements-test.txt: a different version (as global
    pip once resolved) fails here, by name, instead of in five unrelated assertions."""
    from importlib.metadata import version
    pinned = re.search(r"^pycep-parser==(\S+)$", (REPO / "requirements-test.txt").read_text(), re.M)
    assert pinned, "requirements-test.txt does not pin pycep-parser"
    assert version("pycep-parser") == pinned.group(1), "run the infra tests with .venv/bin/python (scripts/setup.sh)"
    raw = props(parse_bicep_raw(INFRA / "modules" / "monitoring.bicep")["resources"]["appInsights"])
    # this version returns `workspace.id` as an operator tree; conftest renders it back to the text
    assert raw["properties"]["WorkspaceResourceId"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "workspace", "operand_2": "id"}}}
    assert props(module("monitoring")["resources"]["appInsights"])["properties"]["WorkspaceResourceId"] == "workspace.id"
