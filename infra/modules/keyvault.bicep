// Key Vault, used twice by main.bicep: the consumer vault (managed PATs, which consumers read) and patrol's own
// vault (owners' refresh tokens, notification URLs, credentials patrol uses; nobody but the Function App reads
// it). RBAC authorization only (no access policies), soft delete with purge protection, optional closed public
// endpoint, every data-plane access (AuditEvent) sent to Log Analytics, and `createMode: recover` to bring back a
// soft-deleted vault of the same name after `azd down` (infra/hooks/preprovision.sh decides).

@description('Azure region of the vault.')
@minLength(1)
param location string

@description('Name of the vault (3-24 letters, digits and hyphens, globally unique).')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Days a deleted secret or vault stays recoverable (7-90). Purge protection makes this a hard floor.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Enabled: reachable from the internet (still Entra-authenticated and RBAC-authorized). Disabled: only trusted Azure services and private endpoints; the Function App then needs VNet integration and a private endpoint (docs/deploy.md).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Public IPv4 addresses or CIDR ranges let through the vault firewall (e.g. the operator running `patrol login`). Non-empty turns the firewall on (default Deny) while the public endpoint stays Enabled; ignored when it is Disabled.')
param allowedIpRanges array = []

@description('default: create (or update) the vault. recover: bring back the soft-deleted vault of this name with its secrets (after `azd down`; purge protection reserves the name for the retention period).')
@allowed([
  'default'
  'recover'
])
param createMode string = 'default'

@description('Resource id of the Log Analytics workspace that receives the vault\'s AuditEvent logs.')
@minLength(1)
param workspaceId string

@description('Tags applied to every resource.')
param tags object = {}

// Any restriction makes the firewall default Deny; the Function App then reaches the vault through its private
// endpoint (modules/network.bicep), and trusted Azure services pass.
var restricted = publicNetworkAccess == 'Disabled' || !empty(allowedIpRanges)

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: the firewall default is decided by parameters: Deny when the public endpoint is Disabled or IP ranges are given (the app then uses a private endpoint); Allow only in the default open mode, for apps without VNet integration, whose Flex Consumption outbound addresses are not fixed. Every request still needs an Entra token and an RBAC role.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    createMode: createMode
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: restricted ? 'Deny' : 'Allow'
      ipRules: [for ip in allowedIpRanges: {
        value: ip
      }]
    }
  }
}

resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

@description('Name of the vault.')
output keyVaultName string = vault.name

@description('Resource id of the vault.')
output keyVaultId string = vault.id

@description('Vault URI, e.g. https://<name>.vault.azure.net/ (PATROL_KEYVAULT_URL).')
output keyVaultUri string = vault.properties.vaultUri
