// Role assignments: the least privilege each principal needs, each scoped to the one resource it is about.
// - the Function App's identity: Key Vault Secrets Officer on the vault (read, write, disable secret versions),
//   Storage Blob Data Owner on its host storage account (leases, timer status, deployment package),
//   Monitoring Metrics Publisher on Application Insights when local auth is off;
// - the Event Grid system topic's identity: Storage Blob Data Contributor on the dead-letter container only;
// - optionally an operator (user or group): Key Vault Secrets Officer, so `patrol login` can store owners' refresh tokens.

@description('Object id of the Function App\'s system-assigned identity.')
@minLength(36)
@maxLength(36)
param functionAppPrincipalId string

@description('Name of the Key Vault.')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Name of the host storage account.')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Name of the Application Insights component.')
@minLength(1)
param appInsightsName string

@description('Grant Monitoring Metrics Publisher (needed when Application Insights refuses local auth).')
param assignMonitoringPublisher bool = true

@description('Object id of the Event Grid system topic\'s identity (dead-lettering); empty to skip.')
param eventGridTopicPrincipalId string = ''

@description('Name of the dead-letter container.')
@minLength(3)
@maxLength(63)
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Object id of an operator (user or group) who runs `patrol login`; empty to skip.')
param operatorPrincipalId string = ''

@description('Kind of the operator principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// Built-in role definition ids (stable across tenants).
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource appSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionAppPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
    description: 'patrol: read, write and disable PAT secrets and owner refresh tokens'
  }
}

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionAppPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
    description: 'patrol: Functions host storage (timer leases, status), per-token leases, deployment package'
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignMonitoringPublisher) {
  name: guid(appInsights.id, functionAppPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
    description: 'patrol: send telemetry with Entra auth (local auth is disabled)'
  }
}

resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(eventGridTopicPrincipalId)) {
  name: guid(deadLetterContainer.id, eventGridTopicPrincipalId, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: eventGridTopicPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid: write undeliverable Key Vault events to the dead-letter container'
  }
}

resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'patrol operator: store owners\' refresh tokens with `patrol login`'
  }
}
