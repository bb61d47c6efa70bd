#!/usr/bin/env bash
# azd postdeploy hook: the second pass, without a nested `azd provision` (reported to hang inside a hook).
# Azure refuses an Event Grid subscription to a function that does not exist yet, and a freshly deployed app
# indexes its functions a little later. So this hook
#   1. waits, bounded (PATROL_HOOK_ATTEMPTS x PATROL_HOOK_DELAY seconds, default 30 x 10 s), until
#      EventGridSecretChanged is indexed;
#   2. creates the subscription on every consumer vault's system topic (AZURE_EVENTGRID_TOPICS) with
#      `az eventgrid system-topic event-subscription create`, each retried up to PATROL_HOOK_ATTEMPTS times, with
#      the same properties as infra/modules/eventgrid-subscription.bicep (an infra test keeps them equal);
#   3. sets DEPLOY_EVENT_SUBSCRIPTION=true, so every later `azd provision` declares the same subscriptions.
# Set SKIP_EVENT_SUBSCRIPTION=true to leave the subscriptions out (e.g. a vault without events).
set -euo pipefail

if [ "${SKIP_EVENT_SUBSCRIPTION:-false}" = "true" ]; then
  echo "postdeploy: SKIP_EVENT_SUBSCRIPTION=true; not creating the Event Grid subscriptions"
  exit 0
fi
if [ "${EVENT_SUBSCRIPTION_DEPLOYED:-false}" = "true" ]; then
  echo "postdeploy: the Event Grid subscriptions are deployed by the template"
  exit 0
fi

missing=()
for v in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_FUNCTION_APP_ID AZURE_EVENTGRID_TOPICS \
         AZURE_STORAGE_ACCOUNT_ID AZURE_DEAD_LETTER_CONTAINER; do
  [ -n "${!v:-}" ] || missing+=("$v")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "postdeploy: error: azd environment values missing: ${missing[*]} (run azd provision first)" >&2
  exit 1
fi

attempts="${PATROL_HOOK_ATTEMPTS:-30}"
delay="${PATROL_HOOK_DELAY:-10}"
function_name=EventGridSecretChanged
subscription_name=patrol-secret-changed

echo "postdeploy: waiting for $function_name to be indexed (up to $attempts tries)"
indexed=0
for ((i = 1; i <= attempts; i++)); do
  if az functionapp function show --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
       --function-name "$function_name" --query name --output tsv >/dev/null 2>&1; then
    indexed=1
    break
  fi
  [ "$i" -lt "$attempts" ] && sleep "$delay"
done
if [ "$indexed" != 1 ]; then
  echo "postdeploy: error: $function_name was not indexed after $attempts tries; check the deployment" \
       "(az functionapp function list), then run: azd hooks run postdeploy" >&2
  exit 1
fi

for topic in $AZURE_EVENTGRID_TOPICS; do
  IFS=/ read -r topic_sub topic_rg topic_name <<<"$topic"
  args=(eventgrid system-topic event-subscription create
    --subscription "$topic_sub" --resource-group "$topic_rg" --system-topic-name "$topic_name"
    --name "$subscription_name"
    --endpoint-type azurefunction --endpoint "$AZURE_FUNCTION_APP_ID/functions/$function_name"
    --included-event-types Microsoft.KeyVault.SecretNewVersionCreated Microsoft.KeyVault.SecretNearExpiry
                           Microsoft.KeyVault.SecretExpired
    --max-events-per-batch 1 --preferred-batch-size-in-kilobytes 64
    --max-delivery-attempts "${EVENT_MAX_DELIVERY_ATTEMPTS:-30}" --event-ttl "${EVENT_TTL_MINUTES:-1440}"
    --deadletter-identity systemassigned
    --deadletter-identity-endpoint "$AZURE_STORAGE_ACCOUNT_ID/blobServices/default/containers/$AZURE_DEAD_LETTER_CONTAINER")
  if [ -n "${EVENT_SUBJECT_PREFIX:-}" ]; then
    args+=(--subject-begins-with "$EVENT_SUBJECT_PREFIX")
  fi
  created=0
  for ((i = 1; i <= attempts; i++)); do
    if az "${args[@]}" --output none; then
      created=1
      break
    fi
    echo "postdeploy: creating the subscription on $topic_name failed (try $i of $attempts)" >&2
    [ "$i" -lt "$attempts" ] && sleep "$delay"
  done
  if [ "$created" != 1 ]; then
    echo "postdeploy: error: no Event Grid subscription on $topic_name after $attempts tries;" \
         "fix the cause above, then run: azd hooks run postdeploy" >&2
    exit 1
  fi
  echo "postdeploy: $topic_name delivers to $function_name"
done

azd env set DEPLOY_EVENT_SUBSCRIPTION true
echo "postdeploy: done; later provisions keep the subscriptions (DEPLOY_EVENT_SUBSCRIPTION=true)"
