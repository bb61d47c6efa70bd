// Key Vault: where patrol keeps every managed PAT and each owner's refresh token. RBAC authorization only
// (no access policies), soft delete with purge protection, optional closed public endpoint, and every data-plane
// access (AuditEvent) sent to Log Analytics.

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

@description('Public IPv4 addresses or CIDR ranges allowed through the vault firewall when it is closed (e.g. the operator running `patrol login`).')
param allowedIpRanges array = []

@description('Resource id of the Log Analytics workspace that receives the vault\'s AuditEvent logs.')
@minLength(1)
param workspaceId string

@description('Tags applied to every resource.')
param tags object = {}

var closed = publicNetworkAccess == 'Disabled'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: the firewall default is a parameter: with publicNetworkAccess Disabled it is Deny; with Enabled (for apps without VNet integration, whose Flex Consumption outbound addresses are not fixed) it must be Allow. Every request still needs an Entra token and an RBAC role.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
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
      defaultAction: closed ? 'Deny' : 'Allow'
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
