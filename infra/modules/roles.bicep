// Role assignments: the least privilege each principal needs, each scoped to the one resource it is about.
// - the Function App's identity: Key Vault Secrets Officer on the consumer vault (write, disable PAT versions)
//   and on patrol's own vault (refresh tokens, notification URLs); on its host storage account Storage Blob Data
//   Owner (leases, timer status, deployment package), Storage Queue Data Contributor and Storage Table Data
//   Contributor (the Functions host's queues and tables with identity-based AzureWebJobsStorage);
//   Monitoring Metrics Publisher on Application Insights when local auth is off;
// - each Event Grid system topic's identity: Storage Blob Data Contributor on the dead-letter container only;
// - optionally an operator (user or group, named by a dedicated parameter, never azd's signed-in principal):
//   Key Vault Secrets Officer on patrol's own vault, so `patrol login` can store owners' refresh tokens and the
//   notification URLs can be set. Nobody else gets a role on patrol's own vault. Consumers get per-secret roles
//   on the consumer vault (modules/consumer-access.bicep).

@description('Object id of the Function App\'s system-assigned identity.')
@minLength(36)
@maxLength(36)
param functionAppPrincipalId string

@description('Name of the consumer Key Vault.')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Name of patrol\'s own Key Vault.')
@minLength(3)
@maxLength(24)
param ownKeyVaultName string

@description('Name of the host storage account.')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Name of the Application Insights component.')
@minLength(1)
param appInsightsName string

@description('Grant Monitoring Metrics Publisher (needed when Application Insights refuses local auth).')
param assignMonitoringPublisher bool = true

@description('Object ids of the Event Grid system topics\' identities (dead-lettering), one per consumer vault.')
param eventGridTopicPrincipalIds array = []

@description('Name of the dead-letter container.')
@minLength(3)
@maxLength(63)
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Object id of an operator (user or group) who runs `patrol login` and sets notification URLs in patrol\'s own vault; empty (the default) to skip.')
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
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource ownVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: ownKeyVaultName
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
    description: 'patrol: write, read and disable the managed PATs in the consumer vault'
  }
}

resource appOwnSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ownVault.id, functionAppPrincipalId, keyVaultSecretsOfficer)
  scope: ownVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
    description: 'patrol: owners\' refresh tokens, notification URLs and credentials in patrol\'s own vault'
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

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionAppPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
    description: 'patrol: the Functions host\'s queues (identity-based AzureWebJobsStorage)'
  }
}

resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionAppPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
    description: 'patrol: the Functions host\'s tables (identity-based AzureWebJobsStorage)'
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

resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for topicPrincipalId in eventGridTopicPrincipalIds: {
  name: guid(deadLetterContainer.id, topicPrincipalId, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid: write undeliverable Key Vault events to the dead-letter container'
  }
}]

resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(ownVault.id, operatorPrincipalId, keyVaultSecretsOfficer)
  scope: ownVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'patrol operator: store owners\' refresh tokens (patrol login) and notification URLs in patrol\'s own vault'
  }
}
