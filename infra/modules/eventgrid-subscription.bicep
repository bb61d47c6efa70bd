// Event Grid subscription: delivers the vault's secret events (new version, near expiry, expired) to the
// EventGridSecretChanged function, one event per call, with retries and identity-based dead-lettering.
// Deploy it only after the code: Azure validates that the function exists and is an Event Grid trigger.

@description('Name of the existing Key Vault system topic.')
@minLength(3)
@maxLength(128)
param topicName string

@description('Name of the subscription.')
@minLength(3)
@maxLength(64)
param subscriptionName string = 'patrol-secret-changed'

@description('Resource id of the Function App.')
@minLength(1)
param functionAppId string

@description('Function that receives the events.')
@minLength(1)
param functionName string = 'EventGridSecretChanged'

@description('Only deliver events for secrets whose name starts with this prefix (empty: all secrets of the vault).')
param subjectPrefix string = ''

@description('Delivery attempts before an event is dead-lettered (Event Grid allows 1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event is retried before it is dead-lettered (Event Grid allows 1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('Resource id of the storage account holding the dead-letter container.')
@minLength(1)
param deadLetterStorageAccountId string

@description('Dead-letter container.')
@minLength(3)
@maxLength(63)
param deadLetterContainerName string = 'eventgrid-deadletter'

var secretEventTypes = [
  'Microsoft.KeyVault.SecretNewVersionCreated'
  'Microsoft.KeyVault.SecretNearExpiry'
  'Microsoft.KeyVault.SecretExpired'
]

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: secretEventTypes
      subjectBeginsWith: subjectPrefix
      subjectEndsWith: ''
      isSubjectCaseSensitive: false
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

@description('Name of the event subscription.')
output subscriptionName string = subscription.name
