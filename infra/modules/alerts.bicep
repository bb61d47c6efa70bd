// Alerts: tell a human when a patrol invocation fails (Application Insights failed requests), when Key Vault
// events could not be delivered (dead-lettered or dropped by Event Grid), and when the daily RotateTimer has not
// succeeded for 26 hours (silence). Notifications go to an action group
// when e-mail addresses are given; without them the alerts still fire and show in the portal.

@description('Azure region of the log alert (log search alerts are regional).')
@minLength(1)
param location string

@description('Name prefix of the alert rules and the action group.')
@minLength(1)
@maxLength(40)
param namePrefix string

@description('Resource id of the Application Insights component.')
@minLength(1)
param appInsightsId string

@description('Hours without a successful RotateTimer run before the silence alert fires (the timer runs daily).')
@minValue(2)
@maxValue(47)
param silenceHours int = 26

@description('Resource id of the Event Grid system topic.')
@minLength(1)
param eventGridTopicId string

@description('E-mail addresses notified by the alerts (empty: no action group).')
param alertEmailAddresses array = []

@description('Severity of the alerts (0 critical .. 4 verbose).')
@allowed([
  0
  1
  2
  3
  4
])
param severity int = 1

@description('Tags applied to every resource.')
param tags object = {}

var notify = !empty(alertEmailAddresses)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: '${namePrefix}-ag'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take(replace(namePrefix, '-', ''), 12)
    enabled: true
    emailReceivers: [for (address, i) in alertEmailAddresses: {
      name: 'email-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

var actions = notify ? [
  {
    actionGroupId: actionGroup.id
  }
] : []

resource failedInvocations 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-failed-invocations'
  location: 'global'
  tags: tags
  properties: {
    description: 'A patrol function invocation (RotateTimer, RotateHttp or EventGridSecretChanged) failed.'
    severity: severity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'failed-requests'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/failed'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
        }
      ]
    }
    actions: actions
  }
}

resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-events-dead-lettered'
  location: 'global'
  tags: tags
  properties: {
    description: 'Event Grid dead-lettered a Key Vault secret event: EventGridSecretChanged did not accept it within the retry policy. See the eventgrid-deadletter container.'
    severity: severity
    enabled: true
    scopes: [
      eventGridTopicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: actions
  }
}

resource dropped 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-events-dropped'
  location: 'global'
  tags: tags
  properties: {
    description: 'Event Grid dropped a Key Vault secret event (not delivered and not dead-lettered).'
    severity: severity
    enabled: true
    scopes: [
      eventGridTopicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dropped'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DroppedEventCount'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: actions
  }
}

@description('Resource id of the action group (empty when no e-mail address is given).')
output actionGroupId string = notify ? actionGroup.id : ''

@description('Names of the alert rules.')
output alertNames array = [
  failedInvocations.name
  deadLettered.name
  dropped.name
]

// Silence is alerted: a timer that stopped firing (a disabled function, a broken deployment, a host that never
// starts) produces no failed request, so the metric alerts above stay quiet. This log alert counts the
// successful RotateTimer invocations patrol itself reports (metric patrol.invocations, docs/metrics.md) in the
// last `silenceHours` hours and fires when there are none — also when the metrics stop arriving (fail closed).
resource rotateTimerSilence 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-rotate-timer-silent'
  location: location
  tags: tags
  properties: {
    displayName: 'patrol: no successful RotateTimer run in ${silenceHours} h'
    description: 'RotateTimer runs daily; no successful run for ${silenceHours} hours means PATs are not being rotated. See docs/metrics.md.'
    severity: severity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where timestamp > ago(${silenceHours}h) | where name == "patrol.invocations" | where tostring(customDimensions["patrol.function"]) == "RotateTimer" and tostring(customDimensions["patrol.outcome"]) in ("completed", "incomplete", "planned")'
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: notify ? [
        actionGroup.id
      ] : []
    }
  }
}
