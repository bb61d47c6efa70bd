// Consumer access: one consumer principal (a pipeline's service connection, a variable group's identity, an
// app) gets Key Vault Secrets User on exactly the secrets it consumes in the consumer vault, each assignment
// scoped to the one secret. Never a vault-wide role: a principal that reads one PAT cannot list or read the
// others, and has no role at all on patrol's own vault. Each secret must exist before its role is assigned
// (patrol creates it on the token's first rotation or onboarding), so add a secret here after that.

@description('Name of the consumer Key Vault.')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Object id of the consumer principal.')
@minLength(36)
@maxLength(36)
param principalId string

@description('Kind of the consumer principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'ServicePrincipal'

@description('Names of the secrets (managed PATs) this principal may read.')
@minLength(1)
param secretNames array

// Key Vault Secrets User: get a secret's value and its properties; no list, no write.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for name in secretNames: {
  parent: vault
  name: name
}]

resource secretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in secretNames: {
  name: guid(vault.id, name, principalId, keyVaultSecretsUser)
  scope: secrets[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: principalId
    principalType: principalType
    description: 'patrol consumer: read this one managed PAT'
  }
}]

@description('Number of per-secret role assignments made.')
output assignmentCount int = length(secretNames)
