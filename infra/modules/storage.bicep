// Storage: the Function App's host storage account (AzureWebJobsStorage: timer leases and status, patrol's
// per-token blob leases), the container the Flex Consumption deployment package is uploaded to, and the
// container Event Grid dead-letters undeliverable Key Vault events into. Shared-key access is disabled:
// every client (the Functions host, patrol, Event Grid, the deployment tooling) authenticates with Entra.

@description('Azure region of the storage account.')
@minLength(1)
param location string

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Blob container the deployment package is uploaded to (Flex Consumption "managed package deployment").')
@minLength(3)
@maxLength(63)
param deploymentContainerName string

@description('Blob container Event Grid writes dead-lettered events to.')
@minLength(3)
@maxLength(63)
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Replication of the account. Zone-redundant where the region offers it is a sensible production choice.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Days deleted blobs and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param deleteRetentionDays int = 7

@description('Resource id of the Log Analytics workspace that receives the blob service\'s access logs.')
@minLength(1)
param workspaceId string

@description('Tags applied to every resource.')
param tags object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: a Function App without VNet integration reaches its host storage on the public endpoint; a default-Deny firewall would stop the host. Every request still needs an Entra token (shared keys are disabled). Close it together with VNet integration (docs/deploy.md, Network isolation).
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public network access is required by a Function App that is not VNet-integrated.
  // checkov:skip=CKV_AZURE_206: the account holds rebuildable data (host timer status, per-token leases, the deployment package, dead letters); patrol's state of record is in Key Vault. Geo-redundancy is one parameter away (main.bicep storageSkuName: Standard_GRS or Standard_GZRS) for those who want it; LRS keeps the default deployable in every region.
  // checkov:skip=CKV_AZURE_43: the name is computed (a prefix plus uniqueString) so checkov cannot evaluate it; the @minLength/@maxLength on storageAccountName and main.bicep's toLower/take keep it within 3-24 lowercase letters and digits.
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'blob-to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

@description('Name of the storage account.')
output storageAccountName string = storage.name

@description('Resource id of the storage account.')
output storageAccountId string = storage.id

@description('Blob endpoint, e.g. https://<name>.blob.core.windows.net/.')
output blobEndpoint string = storage.properties.primaryEndpoints.blob

@description('Name of the deployment container.')
output deploymentContainerName string = deploymentContainer.name

@description('Name of the dead-letter container.')
output deadLetterContainerName string = deadLetterContainer.name
