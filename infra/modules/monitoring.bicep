// Monitoring: the Log Analytics workspace and the workspace-based Application Insights component that
// patrol's Function App writes its traces, requests and exceptions to.

@description('Azure region of the workspace and the component.')
@minLength(1)
param location string

@description('Name of the Log Analytics workspace.')
@minLength(4)
@maxLength(63)
param workspaceName string

@description('Name of the Application Insights component.')
@minLength(1)
@maxLength(260)
param appInsightsName string

@description('Days the workspace keeps data (rotation evidence is also kept by patrol itself).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

@description('Refuse instrumentation-key ingestion; the Function App then authenticates with Entra (Monitoring Metrics Publisher).')
param disableLocalAuth bool = true

@description('Tags applied to every resource.')
param tags object = {}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: disableLocalAuth
    IngestionMode: 'LogAnalytics'
  }
}

@description('Resource id of the Log Analytics workspace (diagnostic settings target).')
output workspaceId string = workspace.id

@description('Name of the Application Insights component.')
output appInsightsName string = appInsights.name

@description('Resource id of the Application Insights component.')
output appInsightsId string = appInsights.id

@description('Connection string of the Application Insights component (not a secret: it carries no key usable when local auth is off).')
output appInsightsConnectionString string = appInsights.properties.ConnectionString
