// Event Grid system topic on the Key Vault: the source of the vault's secret events. It exists from the first
// deployment; the subscription that delivers to the Function App is a separate module (eventgrid-subscription.bicep)
// deployed in a second pass, once the code (and so the EventGridSecretChanged function) exists. One topic per
// consumer vault. Its delivery failures go to Log Analytics (diagnostic settings), so an event Event Grid could
// not hand to the function is visible, not only counted.

@description('Azure region of the vault (a system topic lives in its source\'s region).')
@minLength(1)
param location string

@description('Name of the system topic.')
@minLength(3)
@maxLength(128)
param topicName string

@description('Resource id of the Key Vault.')
@minLength(1)
param keyVaultId string

@description('Resource id of the Log Analytics workspace that receives the topic\'s delivery failures.')
@minLength(1)
param workspaceId string

@description('Tags applied to every resource.')
param tags object = {}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: topicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: keyVaultId
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource deliveryFailures 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'delivery-failures-to-log-analytics'
  scope: topic
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'DeliveryFailures'
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

@description('Name of the system topic.')
output topicName string = topic.name

@description('Resource id of the system topic.')
output topicId string = topic.id

@description('Object id of the topic\'s identity (writes dead-lettered events).')
output principalId string = topic.identity.principalId
