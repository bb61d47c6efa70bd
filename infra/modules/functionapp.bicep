// Function App: the hosting plan and the Linux Function App that runs patrol's custom handler (`handler` at the
// package root). Flex Consumption (FC1, runtime custom 1.0, package deployed from a blob container with the app's
// managed identity; the host sets the handler's execute bit). System-assigned identity, HTTPS only, TLS 1.2+,
// identity-based AzureWebJobsStorage, no basic-auth publishing credentials. Notification URLs (Teams, Slack,
// webhook) are Key Vault references to patrol's own vault, never values in app settings or deployment history.
// (The Elastic Premium option was dropped: run-from-package on Linux Premium needs an Azure Files content share,
// which needs a storage account key, and shared keys are disabled.)

@description('Azure region of the plan and the app.')
@minLength(1)
param location string

@description('Name of the hosting plan.')
@minLength(1)
@maxLength(60)
param planName string

@description('Name of the Function App (also its host name: <name>.azurewebsites.net).')
@minLength(2)
@maxLength(60)
param functionAppName string

@description('Flex Consumption instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Flex Consumption scale-out ceiling (a rotation job needs few instances; 40 is the platform minimum).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Name of the host storage account (AzureWebJobsStorage, identity-based).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Blob endpoint of the host storage account.')
@minLength(1)
param storageBlobEndpoint string

@description('Blob container holding the deployment package (Flex Consumption).')
@minLength(3)
@maxLength(63)
param deploymentContainerName string

@description('Application Insights connection string.')
@minLength(1)
param appInsightsConnectionString string

@description('True when Application Insights refuses local (key) auth: the app then sends telemetry with its identity.')
param appInsightsLocalAuthDisabled bool = true

@description('URI of the consumer Key Vault, where the managed PATs go (PATROL_KEYVAULT_URL).')
@minLength(1)
param keyVaultUri string

@description('URI of patrol\'s own Key Vault: owners\' refresh tokens, notification URLs, credentials (PATROL_OWN_KEYVAULT_URL).')
@minLength(1)
param ownKeyVaultUri string

@description('Name of patrol\'s own Key Vault (for the Key Vault references of the notification URLs).')
@minLength(3)
@maxLength(24)
param ownKeyVaultName string

@description('Notification channels whose URL is a secret in patrol\'s own vault (teams: patrol-teams-webhook-url, slack: patrol-slack-webhook-url, webhook: patrol-webhook-url); each becomes a Key Vault reference in its PATROL_…_URL setting.')
@allowed([
  'teams'
  'slack'
  'webhook'
])
param notificationChannels array = []

@description('NCRONTAB schedule of RotateTimer, 6 fields, UTC (PATROL_SCHEDULE).')
@minLength(11)
param schedule string = '0 0 3 * * *'

@description('Policy file inside the package (PATROL_POLICY_FILE), relative to the app root.')
@minLength(1)
param policyFile string = 'patrol.toml'

@description('Entra tenant PAT owners sign in to (PATROL_TENANT_ID).')
@minLength(1)
param ownerTenantId string

@description('Application (client) id of the Entra app registration PAT owners sign in to (PATROL_CLIENT_ID); empty until registered.')
param ownerClientId string = ''

@description('Further non-secret PATROL_… settings (e.g. PATROL_SMTP_HOST, PATROL_REPORT_RECIPIENTS). Secrets belong in Key Vault: use PATROL_SMTP_PASSWORD_SECRET, never a password here.')
param additionalAppSettings object = {}

@description('Subnet for outbound VNet integration (modules/network.bicep); empty: no VNet integration.')
param virtualNetworkSubnetId string = ''

@description('Tags applied to every resource; the app also gets azd-service-name.')
param tags object = {}

@description('Service name azd deploys the package to.')
@minLength(1)
param azdServiceName string = 'patrol'

var baseSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  PATROL_KEYVAULT_URL: keyVaultUri
  PATROL_OWN_KEYVAULT_URL: ownKeyVaultUri
  PATROL_KEYVAULT_CREDENTIAL: 'managed-identity'
  PATROL_SCHEDULE: schedule
  PATROL_POLICY_FILE: policyFile
  PATROL_TENANT_ID: ownerTenantId
  PATROL_LEASE: 'blob'
  PATROL_LOG_FORMAT: 'json'
}
var clientIdSetting = empty(ownerClientId) ? {} : { PATROL_CLIENT_ID: ownerClientId }
var aadTelemetrySetting = appInsightsLocalAuthDisabled ? { APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD' } : {}
// The platform resolves these with the app's identity (Key Vault Secrets Officer on patrol's own vault) and hands
// the handler the URL; the app settings and the deployment only ever hold the reference.
var notificationSettings = union(
  contains(notificationChannels, 'teams') ? {
    PATROL_TEAMS_WEBHOOK_URL: '@Microsoft.KeyVault(VaultName=${ownKeyVaultName};SecretName=patrol-teams-webhook-url)'
  } : {},
  contains(notificationChannels, 'slack') ? {
    PATROL_SLACK_WEBHOOK_URL: '@Microsoft.KeyVault(VaultName=${ownKeyVaultName};SecretName=patrol-slack-webhook-url)'
  } : {},
  contains(notificationChannels, 'webhook') ? {
    PATROL_WEBHOOK_URL: '@Microsoft.KeyVault(VaultName=${ownKeyVaultName};SecretName=patrol-webhook-url)'
  } : {}
)
// additionalAppSettings first: patrol's own settings and the references win over anything passed there.
var allSettings = union(additionalAppSettings, baseSettings, clientIdSetting, aadTelemetrySetting, notificationSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy needs always-ready instances (a standing cost on Flex Consumption); patrol runs a daily timer and idempotent, journaled, resumable rotations, so an outage of a zone delays a run rather than losing one. Not worth the standing cost by default.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid's AzureFunction delivery and operators' RotateHttp calls reach the app on its public endpoint (Event Grid cannot deliver to a private endpoint); every call is authenticated by the Functions host with a system or function key over TLS 1.2+.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales to zero and has no numberOfWorkers; a missed instance delays a rotation (the journal resumes it), and the timer catches up on the next run.
  // checkov:skip=CKV_AZURE_213: App Service health checks do not apply to Flex Consumption function apps; silence is alerted instead (modules/alerts.bicep: no successful RotateTimer run in 26 hours).
  // checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP endpoint and deprecates siteConfig.ftpsState (setting it is refused or ignored); FTP publishing credentials are off anyway (basicPublishingCredentialsPolicies ftp allow=false below).
  // checkov:skip=CKV_AZURE_17: required client certificates would break the app's two callers: Event Grid's AzureFunction delivery and operators calling RotateHttp with a function key. Both are authenticated by the Functions host (system key / function key) over TLS 1.2+.
  name: functionAppName
  location: location
  tags: union(tags, { 'azd-service-name': azdServiceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    // Flex Consumption has no FTP (ftpsState) and routes all outbound traffic through an integrated VNet
    // (vnetRouteAllEnabled): both site properties are deprecated there and left out.
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      cors: {
        allowedOrigins: []
      }
      appSettings: [for setting in items(allSettings): {
        name: setting.key
        value: string(setting.value)
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

// Publishing with a user name and password (FTP, SCM basic auth) is off: deployments use Entra (azd, az, func).
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

@description('Name of the Function App.')
output functionAppName string = functionApp.name

@description('Resource id of the Function App.')
output functionAppId string = functionApp.id

@description('Object id of the app\'s system-assigned identity (the principal patrol runs as).')
output principalId string = functionApp.identity.principalId

@description('Default host name, e.g. <name>.azurewebsites.net.')
output defaultHostName string = functionApp.properties.defaultHostName
