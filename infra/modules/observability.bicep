// Observability on patrol's own metrics (Application Insights customMetrics, exported by the handler; see
// docs/metrics.md): the Azure Monitor workbook (expiry timeline, rotations, failures, audit findings) and the
// alert rules on those metrics: a managed PAT inside its last day that patrol has not rotated, and rotation
// failing for the same token on two runs. The silence alert (no successful RotateTimer) is in alerts.bicep.

@description('Azure region of the workbook and the log alerts.')
@minLength(1)
param location string

@description('Name prefix of the alert rules.')
@minLength(1)
@maxLength(40)
param namePrefix string

@description('Resource id of the Application Insights component the metrics go to.')
@minLength(1)
param appInsightsId string

@description('Resource id of the action group the alerts notify (empty: the alerts show in the portal only).')
param actionGroupId string = ''

@description('A current PAT with less time left than this (seconds) and not rotated fires the last-day alert.')
@minValue(3600)
@maxValue(604800)
param lastDaySeconds int = 86400

@description('Failed runs of the same token within failingWindowHours that fire the rotation-failing alert.')
@minValue(2)
@maxValue(10)
param failingRuns int = 2

@description('Hours over which failed runs of one token are counted (the timer runs daily: two runs fit in 48).')
@minValue(24)
@maxValue(168)
param failingWindowHours int = 48

@description('Severity of the last-day alert (0 critical .. 4 verbose).')
@allowed([
  0
  1
  2
  3
  4
])
param lastDaySeverity int = 1

@description('Severity of the rotation-failing alert (0 critical .. 4 verbose).')
@allowed([
  0
  1
  2
  3
  4
])
param failingSeverity int = 2

@description('Tags applied to every resource.')
param tags object = {}

var actions = {
  actionGroups: empty(actionGroupId) ? [] : [
    actionGroupId
  ]
}

// A dimension of customMetrics, by its OpenTelemetry attribute name.
var pat = 'strcat(tostring(customDimensions["patrol.secret.name"]), iff(tostring(customDimensions["patrol.pat.managed"]) == "true", "", "(unmanaged) "), " ", tostring(customDimensions["patrol.pat.authorization_id"]))'

var queries = {
  expiryTimeline: 'customMetrics | where name == "patrol.pat.expiry.remaining" | extend pat = ${pat} | summarize days_left = round(min(value) / 86400.0, 2) by bin(timestamp, 1h), pat | render timechart'
  expiringSoon: 'customMetrics | where timestamp > ago(2d) and name == "patrol.pat.expiry.remaining" | extend pat = ${pat}, state = tostring(customDimensions["patrol.pat.state"]), organization = tostring(customDimensions["patrol.organization"]), owner = tostring(customDimensions["patrol.owner"]) | summarize arg_max(timestamp, value, state, organization, owner) by pat | where value < 7 * 86400.0 | project pat, state, days_left = round(value / 86400.0, 2), organization, owner, seen = timestamp | order by days_left asc'
  rotations: 'customMetrics | where name == "patrol.run.tokens" and tostring(customDimensions["patrol.run.dry_run"]) != "true" | extend result = tostring(customDimensions["patrol.run.result"]) | where result in ("rotated", "revoked", "failed", "deferred") | summarize tokens = sum(valueSum) by bin(timestamp, 1d), result | render columnchart'
  failures: 'customMetrics | where name == "patrol.token.rotation.failures" | extend secret = tostring(customDimensions["patrol.secret.name"]), organization = tostring(customDimensions["patrol.organization"]) | summarize failed_runs = sum(valueSum), last = max(timestamp) by secret, organization | order by last desc'
  invocations: 'customMetrics | where name == "patrol.invocations" | extend invocation = strcat(tostring(customDimensions["patrol.function"]), " ", tostring(customDimensions["patrol.outcome"])) | summarize invocations = sum(valueSum) by bin(timestamp, 1d), invocation | render columnchart'
  findings: 'customMetrics | where name == "patrol.audit.findings" and tostring(customDimensions["patrol.run.dry_run"]) != "true" | extend rule = tostring(customDimensions["patrol.audit.rule"]), severity = tostring(customDimensions["patrol.audit.severity"]) | summarize findings = sum(valueSum) by rule, severity | order by findings desc'
  signIn: 'customMetrics | where timestamp > ago(2d) and name == "patrol.owner.sign_in_required" | extend owner = tostring(customDimensions["patrol.owner"]), organization = tostring(customDimensions["patrol.organization"]) | summarize arg_max(timestamp, value) by owner, organization | where value > 0 | project owner, organization, since = timestamp'
}

var tiles = [
  {
    title: 'Days left per PAT (expiry timeline)'
    query: queries.expiryTimeline
    visualization: 'timechart'
  }
  {
    title: 'PATs with less than 7 days left'
    query: queries.expiringSoon
    visualization: 'table'
  }
  {
    title: 'Rotations, revocations and failures per day'
    query: queries.rotations
    visualization: 'barchart'
  }
  {
    title: 'Tokens whose rotation failed'
    query: queries.failures
    visualization: 'table'
  }
  {
    title: 'Invocations by function and outcome'
    query: queries.invocations
    visualization: 'barchart'
  }
  {
    title: 'Audit findings by rule and severity'
    query: queries.findings
    visualization: 'table'
  }
  {
    title: 'Owners who must sign in again (patrol login)'
    query: queries.signIn
    visualization: 'table'
  }
]

var intro = {
  type: 1
  name: 'intro'
  content: {
    json: '## patrol: PAT expiry and rotation\nFrom the metrics patrol exports (docs/metrics.md). Owners are pseudonymous unless PATROL_METRICS_OWNER_LABEL=upn.'
  }
}

var tileItems = [for t in tiles: {
  type: 3
  name: t.title
  content: {
    version: 'KqlItem/1.0'
    title: t.title
    query: t.query
    size: 0
    timeContext: {
      durationMs: 2592000000
    }
    queryType: 0
    resourceType: 'microsoft.insights/components'
    visualization: t.visualization
  }
}]

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat([
    intro
  ], tileItems)
  isLocked: false
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsightsId, 'patrol-expiry-rotation-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'patrol: PAT expiry and rotation'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: string(workbookContent)
  }
}

// One alert per token (split by secret): its current PAT has less than a day left. patrol rotates days before
// expiry, so this means rotation stopped for that token.
resource lastDay 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-pat-last-day'
  location: location
  tags: tags
  properties: {
    displayName: 'patrol: a managed PAT is in its last day and was not rotated'
    description: 'The current PAT of a managed token expires within a day and patrol has not replaced it. See docs/metrics.md: find why the token is not rotating (patrol status), fix it, rotate it now.'
    severity: lastDaySeverity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P1D'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "patrol.pat.expiry.remaining" | extend state = tostring(customDimensions["patrol.pat.state"]), secret = tostring(customDimensions["patrol.secret.name"]) | where state in ("current", "failing") | summarize arg_max(timestamp, value) by secret | where value < ${lastDaySeconds}'
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'secret'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

// One alert per token: its rotation failed in `failingRuns` runs within `failingWindowHours` (one failed run is a
// notice to the token's owners; a second means it will not fix itself).
resource failing 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-rotation-failing'
  location: location
  tags: tags
  properties: {
    displayName: 'patrol: rotation of a token failed on ${failingRuns} runs'
    description: 'The same token failed to rotate in ${failingRuns} runs within ${failingWindowHours} h. See docs/metrics.md: read the runs\' logs for the secret, fix the cause (owner sign-in, scopes, consumer), rotate it.'
    severity: failingSeverity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where timestamp > ago(${failingWindowHours}h) and name == "patrol.token.rotation.failures" | extend secret = tostring(customDimensions["patrol.secret.name"]) | summarize runs = sum(valueSum) by secret | where runs >= ${failingRuns}'
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'secret'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

@description('Resource id of the workbook.')
output workbookId string = workbook.id

@description('Names of the metric alert rules.')
output alertNames array = [
  lastDay.name
  failing.name
]
