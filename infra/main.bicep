// patrol on Azure: one resource group holding the Function App that runs patrol's custom handler, its host
// storage, two Key Vaults — the consumer vault (managed PATs, which consumers read with per-secret roles) and
// patrol's own vault (owners' refresh tokens, notification URLs; closed to everyone but the Function App) —
// monitoring, alerts, the metrics workbook and the Key Vault → Event Grid → EventGridSecretChanged wiring for every consumer vault
// (patrol's and any vault a team keeps itself). Deployed by `azd up` (azure.yaml) or scripts/deploy.sh; see
// docs/deploy.md.
//
// Two passes: Azure refuses an Event Grid subscription until the EventGridSecretChanged function exists, so the
// first pass (deployEventSubscription=false) creates everything else, the code is deployed, and azure.yaml's
// postdeploy hook waits (bounded) for the function to be indexed and creates the subscriptions with
// `az eventgrid`, exactly as modules/eventgrid-subscription.bicep declares them; it then sets
// DEPLOY_EVENT_SUBSCRIPTION=true so later provisions keep them.

targetScope = 'subscription'

@description('azd environment name; names and tags every resource.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region of every resource (check `az functionapp list-flexconsumption-locations` for Flex Consumption).')
@minLength(1)
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or reuse (default rg-<environmentName>).')
@maxLength(90)
param resourceGroupName string = ''

@description('Flex Consumption instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Replication of the host storage account (Standard_GRS or Standard_GZRS for geo-redundancy).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Appended to both vault names (up to 6 lowercase letters or digits): a fresh name when the old one is reserved by a purge-protected, soft-deleted vault you do not want back (docs/deploy.md, azd down).')
@maxLength(6)
param keyVaultNameSuffix string = ''

@description('default, or recover: bring back the soft-deleted consumer vault of the same name (set by infra/hooks/preprovision.sh after `azd down`).')
@allowed([
  'default'
  'recover'
])
param keyVaultCreateMode string = 'default'

@description('default, or recover: bring back patrol\'s own soft-deleted vault of the same name (set by infra/hooks/preprovision.sh).')
@allowed([
  'default'
  'recover'
])
param ownKeyVaultCreateMode string = 'default'

@description('Consumers of the consumer vault, each with the secrets it may read: [{"principalId": "<object id>", "principalType": "ServicePrincipal", "secretNames": ["ci-build-pat"]}]. Each gets Key Vault Secrets User on exactly those secrets.')
param consumerPrincipals array = []

@description('Consumer vaults teams keep themselves: [{"name": "kv-team-a", "resourceGroup": "rg-team-a", "subscriptionId": "<id>", "location": "westeurope"}]. patrol gets Secrets Officer there and each gets its own Event Grid topic and subscription.')
param externalConsumerVaults array = []

@description('Notification channels whose URL is a secret in patrol\'s own vault (teams, slack, webhook); the app setting becomes a Key Vault reference. Set the secret yourself (docs/deploy.md): the URL never passes through a parameter.')
@allowed([
  'teams'
  'slack'
  'webhook'
])
param notificationChannels array = []

@description('Enabled: the vault answers on its public endpoint (Entra + RBAC still required). Disabled: trusted services and private endpoints only.')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('IPv4 addresses / CIDR ranges let through the vault firewall (public endpoint Enabled, default Deny), e.g. the operator running `patrol login`.')
param keyVaultAllowedIpRanges array = []

@description('Integrate the Function App with a new virtual network and reach the vault through a private endpoint. Implied when the vault is Disabled or firewalled.')
param vnetIntegration bool = false

@description('Outbound traffic of the integrated app leaves through a NAT gateway with one static IP (for Azure DevOps IP policies).')
param vnetNatGateway bool = true

@description('Address space of that virtual network (a /16 is carved into /24 subnets).')
@minLength(9)
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Application Insights refuses instrumentation-key ingestion; the app authenticates with its identity.')
param disableAppInsightsLocalAuth bool = true

@description('RotateTimer schedule, NCRONTAB with 6 fields, UTC (PATROL_SCHEDULE).')
@minLength(11)
param schedule string = '0 0 3 * * *'

@description('Policy file in the package, relative to the app root (PATROL_POLICY_FILE).')
@minLength(1)
param policyFile string = 'patrol.toml'

@description('Entra tenant the PAT owners sign in to (PATROL_TENANT_ID); default: this subscription\'s tenant.')
param ownerTenantId string = ''

@description('Client id of the Entra app registration PAT owners sign in to (PATROL_CLIENT_ID); see docs/deploy.md.')
param ownerClientId string = ''

@description('Further non-secret PATROL_… app settings, e.g. {"PATROL_SMTP_HOST": "smtp.contoso.com"}.')
param additionalAppSettings object = {}

@description('Second pass: create the Event Grid subscription (only after the code is deployed).')
param deployEventSubscription bool = false

@description('Deliver events only for secrets whose name starts with this prefix (empty: all).')
param eventSubjectPrefix string = ''

@description('Event Grid delivery attempts before dead-lettering (1-30).')
@minValue(1)
@maxValue(30)
param eventMaxDeliveryAttempts int = 30

@description('Minutes Event Grid retries an event before dead-lettering (1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('E-mail addresses that receive the alerts (empty: alerts fire in the portal only).')
param alertEmailAddresses array = []

@description('Object id of the operator (user or group) who runs `patrol login` and sets notification URLs: Key Vault Secrets Officer on patrol\'s own vault. A dedicated setting (PATROL_OPERATOR_PRINCIPAL_ID), never azd\'s signed-in principal; empty (the default): nobody but the Function App.')
param operatorPrincipalId string = ''

@description('Kind of the operator principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Extra tags for every resource.')
param tags object = {}

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'azd-env-name': environmentName, application: 'patrol' })
var rgName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var functionAppName = 'func-patrol-${resourceToken}'
var useVnet = vnetIntegration || keyVaultPublicNetworkAccess == 'Disabled' || !empty(keyVaultAllowedIpRanges)
var vnetOctets = split(split(vnetAddressPrefix, '/')[0], '.')
var vnetBase = '${vnetOctets[0]}.${vnetOctets[1]}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: rgName
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    workspaceName: 'log-patrol-${resourceToken}'
    appInsightsName: 'appi-patrol-${resourceToken}'
    disableLocalAuth: disableAppInsightsLocalAuth
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    storageAccountName: 'stpatrol${take(resourceToken, 16)}'
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

// The consumer vault keeps the name the single vault had, so an existing deployment's PATs stay where they are.
module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    keyVaultName: 'kv-patrol-${take(resourceToken, 13 - length(keyVaultNameSuffix))}${keyVaultNameSuffix}'
    createMode: keyVaultCreateMode
    publicNetworkAccess: keyVaultPublicNetworkAccess
    allowedIpRanges: keyVaultAllowedIpRanges
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

// patrol's own vault: same network rules as the consumer vault; only the Function App (and an operator, if
// named) has a role on it.
module ownKeyVault 'modules/keyvault.bicep' = {
  name: 'keyvault-own'
  scope: rg
  params: {
    location: location
    keyVaultName: 'kvp-own-${take(resourceToken, 16 - length(keyVaultNameSuffix))}${keyVaultNameSuffix}'
    createMode: ownKeyVaultCreateMode
    publicNetworkAccess: keyVaultPublicNetworkAccess
    allowedIpRanges: keyVaultAllowedIpRanges
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

module network 'modules/network.bicep' = if (useVnet) {
  name: 'network'
  scope: rg
  params: {
    location: location
    vnetName: 'vnet-patrol-${resourceToken}'
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: '${vnetBase}.1.0/24'
    privateEndpointSubnetPrefix: '${vnetBase}.2.0/24'
    natGateway: vnetNatGateway
    keyVaultId: keyVault.outputs.keyVaultId
    ownKeyVaultId: ownKeyVault.outputs.keyVaultId
    tags: allTags
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    location: location
    planName: 'plan-patrol-${resourceToken}'
    functionAppName: functionAppName
    instanceMemoryMB: instanceMemoryMB
    storageAccountName: storage.outputs.storageAccountName
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    appInsightsLocalAuthDisabled: disableAppInsightsLocalAuth
    keyVaultUri: keyVault.outputs.keyVaultUri
    ownKeyVaultUri: ownKeyVault.outputs.keyVaultUri
    ownKeyVaultName: ownKeyVault.outputs.keyVaultName
    notificationChannels: notificationChannels
    schedule: schedule
    policyFile: policyFile
    ownerTenantId: empty(ownerTenantId) ? subscription().tenantId : ownerTenantId
    ownerClientId: ownerClientId
    additionalAppSettings: additionalAppSettings
    virtualNetworkSubnetId: useVnet ? network.outputs.appSubnetId : ''
    tags: allTags
  }
}

module eventGridTopic 'modules/eventgrid-topic.bicep' = {
  name: 'eventgrid-topic'
  scope: rg
  params: {
    location: location
    topicName: 'evgt-patrol-${resourceToken}'
    keyVaultId: keyVault.outputs.keyVaultId
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

// Teams' own consumer vaults: patrol may write there, and each vault gets its own system topic.
module externalVaultAccess 'modules/vault-officer.bicep' = [for (v, i) in externalConsumerVaults: {
  name: 'vault-officer-${i}'
  scope: resourceGroup(v.subscriptionId, v.resourceGroup)
  params: {
    keyVaultName: v.name
    functionAppPrincipalId: functionApp.outputs.principalId
  }
}]

module externalTopics 'modules/eventgrid-topic.bicep' = [for (v, i) in externalConsumerVaults: {
  name: 'eventgrid-topic-${i}'
  scope: resourceGroup(v.subscriptionId, v.resourceGroup)
  params: {
    location: v.location
    topicName: 'evgt-patrol-${take(resourceToken, 8)}-${v.name}'
    keyVaultId: externalVaultAccess[i].outputs.keyVaultId
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}]

var externalTopicPrincipalIds = [for (v, i) in externalConsumerVaults: externalTopics[i].outputs.principalId]
var externalTopicRefs = [for (v, i) in externalConsumerVaults: '${v.subscriptionId}/${v.resourceGroup}/${externalTopics[i].outputs.topicName}']

// Per-secret Key Vault Secrets User for each consumer on the consumer vault.
module consumerAccess 'modules/consumer-access.bicep' = [for (c, i) in consumerPrincipals: {
  name: 'consumer-access-${i}'
  scope: rg
  params: {
    keyVaultName: keyVault.outputs.keyVaultName
    principalId: c.principalId
    principalType: c.principalType
    secretNames: c.secretNames
  }
}]

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    functionAppPrincipalId: functionApp.outputs.principalId
    keyVaultName: keyVault.outputs.keyVaultName
    ownKeyVaultName: ownKeyVault.outputs.keyVaultName
    storageAccountName: storage.outputs.storageAccountName
    appInsightsName: monitoring.outputs.appInsightsName
    assignMonitoringPublisher: disableAppInsightsLocalAuth
    eventGridTopicPrincipalIds: concat([
      eventGridTopic.outputs.principalId
    ], externalTopicPrincipalIds)
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    namePrefix: 'patrol-${take(resourceToken, 8)}'
    appInsightsId: monitoring.outputs.appInsightsId
    eventGridTopicId: eventGridTopic.outputs.topicId
    alertEmailAddresses: alertEmailAddresses
    tags: allTags
  }
}

module observability 'modules/observability.bicep' = {
  name: 'observability'
  scope: rg
  params: {
    location: location
    namePrefix: 'patrol-${take(resourceToken, 8)}'
    appInsightsId: monitoring.outputs.appInsightsId
    actionGroupId: alerts.outputs.actionGroupId
    tags: allTags
  }
}

module eventSubscription 'modules/eventgrid-subscription.bicep' = if (deployEventSubscription) {
  name: 'eventgrid-subscription'
  scope: rg
  params: {
    topicName: eventGridTopic.outputs.topicName
    functionAppId: functionApp.outputs.functionAppId
    subjectPrefix: eventSubjectPrefix
    maxDeliveryAttempts: eventMaxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    deadLetterStorageAccountId: storage.outputs.storageAccountId
    deadLetterContainerName: storage.outputs.deadLetterContainerName
  }
  dependsOn: [
    roles
  ]
}

module externalEventSubscriptions 'modules/eventgrid-subscription.bicep' = [for (v, i) in externalConsumerVaults: if (deployEventSubscription) {
  name: 'eventgrid-subscription-${i}'
  scope: resourceGroup(v.subscriptionId, v.resourceGroup)
  params: {
    topicName: externalTopics[i].outputs.topicName
    functionAppId: functionApp.outputs.functionAppId
    subjectPrefix: eventSubjectPrefix
    maxDeliveryAttempts: eventMaxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    deadLetterStorageAccountId: storage.outputs.storageAccountId
    deadLetterContainerName: storage.outputs.deadLetterContainerName
  }
  dependsOn: [
    roles
  ]
}]

// Outputs become azd environment values (azd env get-values) used by the hooks and docs/deploy.md.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.functionAppName
output AZURE_FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName
output AZURE_FUNCTION_APP_PRINCIPAL_ID string = functionApp.outputs.principalId
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.keyVaultName
output PATROL_KEYVAULT_URL string = keyVault.outputs.keyVaultUri
output AZURE_OWN_KEY_VAULT_NAME string = ownKeyVault.outputs.keyVaultName
output PATROL_OWN_KEYVAULT_URL string = ownKeyVault.outputs.keyVaultUri
output AZURE_FUNCTION_APP_ID string = functionApp.outputs.functionAppId
output AZURE_STORAGE_ACCOUNT_ID string = storage.outputs.storageAccountId
output AZURE_DEAD_LETTER_CONTAINER string = storage.outputs.deadLetterContainerName
// Every consumer vault's system topic, as `<subscription id>/<resource group>/<topic name>` separated by spaces
// (infra/hooks/postdeploy.sh subscribes each).
output AZURE_EVENTGRID_TOPICS string = join(concat([
  '${subscription().subscriptionId}/${rg.name}/${eventGridTopic.outputs.topicName}'
], externalTopicRefs), ' ')
output VNET_INTEGRATION_USED bool = useVnet
// infra/hooks/preprovision.sh recovers soft-deleted vaults only while the names stay the same.
output KEYVAULT_NAME_SUFFIX_USED string = keyVaultNameSuffix
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.storageAccountName
output AZURE_EVENTGRID_TOPIC_NAME string = eventGridTopic.outputs.topicName
output AZURE_FUNCTION_APP_EGRESS_IP string = useVnet ? network.outputs.egressIpAddress : ''
output EVENT_SUBSCRIPTION_DEPLOYED bool = deployEventSubscription
