// patrol on Azure: one resource group holding the Function App that runs patrol's custom handler, its host
// storage, the Key Vault for PATs and owners' refresh tokens, monitoring, alerts and the Key Vault → Event Grid →
// EventGridSecretChanged wiring. Deployed by `azd up` (azure.yaml) or scripts/deploy.sh; see docs/deploy.md.
//
// Two passes: the Event Grid subscription is refused by Azure until the EventGridSecretChanged function exists,
// so the first pass (deployEventSubscription=false) creates everything else, the code is deployed, and a second
// pass (deployEventSubscription=true; azure.yaml's postdeploy hook) adds the subscription.

targetScope = 'subscription'

@description('azd environment name; names and tags every resource.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region of every resource (check `az functionapp list-flexconsumption-locations` for Flex Consumption).')
@minLength(1)
param location string

@description('Resource group to create or reuse (default rg-<environmentName>).')
@maxLength(90)
param resourceGroupName string = ''

@description('FlexConsumption (FC1, recommended) or ElasticPremium (EP1-EP3) where Flex is unavailable or slots are needed.')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string = 'FlexConsumption'

@description('Elastic Premium size (only with hostingPlan ElasticPremium).')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param premiumSku string = 'EP1'

@description('Flex Consumption instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

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

@description('Object id of the operator (user or group) who runs `patrol login` and needs to write owners\' refresh tokens; azd passes the signed-in user.')
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
    deploymentContainerName: deploymentContainerName
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    keyVaultName: 'kv-patrol-${take(resourceToken, 13)}'
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
    hostingPlan: hostingPlan
    natGateway: vnetNatGateway
    keyVaultId: keyVault.outputs.keyVaultId
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
    hostingPlan: hostingPlan
    premiumSku: premiumSku
    instanceMemoryMB: instanceMemoryMB
    storageAccountName: storage.outputs.storageAccountName
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    appInsightsLocalAuthDisabled: disableAppInsightsLocalAuth
    keyVaultUri: keyVault.outputs.keyVaultUri
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
    tags: allTags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    functionAppPrincipalId: functionApp.outputs.principalId
    keyVaultName: keyVault.outputs.keyVaultName
    storageAccountName: storage.outputs.storageAccountName
    appInsightsName: monitoring.outputs.appInsightsName
    assignMonitoringPublisher: disableAppInsightsLocalAuth
    eventGridTopicPrincipalId: eventGridTopic.outputs.principalId
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'patrol-${take(resourceToken, 8)}'
    appInsightsId: monitoring.outputs.appInsightsId
    eventGridTopicId: eventGridTopic.outputs.topicId
    alertEmailAddresses: alertEmailAddresses
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

// Outputs become azd environment values (azd env get-values) used by the hooks and docs/deploy.md.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.functionAppName
output AZURE_FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName
output AZURE_FUNCTION_APP_PRINCIPAL_ID string = functionApp.outputs.principalId
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.keyVaultName
output PATROL_KEYVAULT_URL string = keyVault.outputs.keyVaultUri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.storageAccountName
output AZURE_EVENTGRID_TOPIC_NAME string = eventGridTopic.outputs.topicName
output AZURE_FUNCTION_APP_EGRESS_IP string = useVnet ? network.outputs.egressIpAddress : ''
output EVENT_SUBSCRIPTION_DEPLOYED bool = deployEventSubscription
