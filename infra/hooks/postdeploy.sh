#!/usr/bin/env bash
# azd postdeploy hook: the second provisioning pass. Azure refuses an Event Grid subscription to a function that
# does not exist yet, so the first `azd provision` skips it (DEPLOY_EVENT_SUBSCRIPTION=false); once `azd deploy`
# has published the code, this turns the subscription on and provisions again (incremental: only the subscription
# is new). Later `azd up` runs keep DEPLOY_EVENT_SUBSCRIPTION=true, so the subscription stays.
# Set SKIP_EVENT_SUBSCRIPTION=true to leave the subscription out (e.g. a vault without events).
set -euo pipefail

if [ "${SKIP_EVENT_SUBSCRIPTION:-false}" = "true" ]; then
  echo "postdeploy: SKIP_EVENT_SUBSCRIPTION=true; not creating the Event Grid subscription"
  exit 0
fi
if [ "${EVENT_SUBSCRIPTION_DEPLOYED:-false}" = "true" ]; then
  echo "postdeploy: the Event Grid subscription is already deployed"
  exit 0
fi
echo "postdeploy: the code is deployed; second pass: creating the Event Grid subscription"
azd env set DEPLOY_EVENT_SUBSCRIPTION true
azd provision --no-prompt
