// A consumer vault a team keeps itself (another resource group or subscription): the Function App's identity
// gets Key Vault Secrets Officer on that one vault, so patrol can write, read and disable the PATs it delivers
// there. Deployed at the vault's resource group.

@description('Name of the team\'s existing Key Vault.')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Object id of the Function App\'s system-assigned identity.')
@minLength(36)
@maxLength(36)
param functionAppPrincipalId string

var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionAppPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
    description: 'patrol: write, read and disable the managed PATs delivered to this team\'s vault'
  }
}

@description('Resource id of the vault.')
output keyVaultId string = vault.id
