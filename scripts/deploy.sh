#!/usr/bin/env bash
# Runs an Azure Resource Manager deployment of patrol's Bicep (infra/main.bicep) in a way that survives
# deployments longer than an access token lives (about 60 minutes): it starts the deployment without waiting,
# polls its state, renews the Azure CLI sign-in on a timer (default every 45 minutes) and exits with the
# deployment's real outcome. The classic failure it avoids: a CI job signed in with a federated (OIDC)
# credential whose client assertion has expired, so the first token refresh after minute 60 fails with
# AADSTS700024 while the deployment itself is still running fine in Azure.
#
# Usage: scripts/deploy.sh [options]
#   --template FILE        Bicep or ARM template (default: infra/main.bicep)
#   --parameters FILE      parameters file; ${VAR} and ${VAR=default} are expanded from the environment as azd
#                          does (default: infra/main.parameters.json); may be given more than once
#   --param NAME=VALUE     one more parameter (e.g. deployEventSubscription=true); may be repeated
#   --location REGION      region of a subscription-scope deployment (default: $AZURE_LOCATION)
#   --resource-group RG    deploy at resource-group scope into RG instead of subscription scope
#   --name NAME            deployment name (default: patrol-<UTC timestamp>)
#   --poll-interval SEC    seconds between state polls (default: 30)
#   --refresh-every SEC    renew the sign-in this often (default: 2700 = 45 min; must be below the token lifetime)
#   --refresh-command CMD  run CMD (bash -c) to sign in again, e.g. a script that does `az login` with a fresh
#                          credential; default: re-login with a fresh GitHub Actions OIDC token when running in
#                          GitHub Actions with AZURE_CLIENT_ID and AZURE_TENANT_ID set, else only verify the
#                          CLI's own refresh (`az account get-access-token`)
#   --timeout SEC          stop waiting after SEC seconds (default: 21600 = 6 h)
#   --cancel-on-timeout    cancel the deployment in Azure when the timeout is reached (default: leave it running)
#   --max-poll-errors N    consecutive failed polls tolerated before giving up (default: 5)
#   --retry-delay SEC      pause before the 2nd and 3rd sign-in attempt, multiplied by the attempt (default: 5)
# Exit codes: 0 Succeeded; 1 Failed or Canceled (errors printed); 2 usage or parameter error;
#             3 outcome unknown (timeout, sign-in lost, Azure unreachable) - the deployment may still be running;
#             130 interrupted (the deployment keeps running in Azure).
# Access tokens are never printed: only their expiry times.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
template="$repo_root/infra/main.bicep"
param_files=()
param_pairs=()
location="${AZURE_LOCATION:-}"
resource_group=""
name="patrol-$(date -u +%Y%m%d-%H%M%S)"
poll_interval=30
refresh_every=2700
refresh_command=""
timeout=21600
cancel_on_timeout=0
max_poll_errors=5
retry_delay=5
default_params=1

log() { echo "deploy: $(date -u +%H:%M:%S) $*" >&2; }
usage_error() { echo "deploy: $*" >&2; echo "run scripts/deploy.sh --help for usage" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
is_number() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; }
is_positive_int() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --template) [ $# -ge 2 ] || usage_error "$1 needs a value"; template="$2"; shift 2 ;;
    --parameters) [ $# -ge 2 ] || usage_error "$1 needs a value"; param_files+=("$2"); default_params=0; shift 2 ;;
    --param) [ $# -ge 2 ] || usage_error "$1 needs a value"
      [[ "$2" == *=* ]] || usage_error "--param takes NAME=VALUE, got: $2"
      param_pairs+=("$2"); shift 2 ;;
    --location) [ $# -ge 2 ] || usage_error "$1 needs a value"; location="$2"; shift 2 ;;
    --resource-group) [ $# -ge 2 ] || usage_error "$1 needs a value"; resource_group="$2"; shift 2 ;;
    --name) [ $# -ge 2 ] || usage_error "$1 needs a value"; name="$2"; shift 2 ;;
    --poll-interval) [ $# -ge 2 ] || usage_error "$1 needs a value"; poll_interval="$2"; shift 2 ;;
    --refresh-every) [ $# -ge 2 ] || usage_error "$1 needs a value"; refresh_every="$2"; shift 2 ;;
    --refresh-command) [ $# -ge 2 ] || usage_error "$1 needs a value"; refresh_command="$2"; shift 2 ;;
    --timeout) [ $# -ge 2 ] || usage_error "$1 needs a value"; timeout="$2"; shift 2 ;;
    --cancel-on-timeout) cancel_on_timeout=1; shift ;;
    --max-poll-errors) [ $# -ge 2 ] || usage_error "$1 needs a value"; max_poll_errors="$2"; shift 2 ;;
    --retry-delay) [ $# -ge 2 ] || usage_error "$1 needs a value"; retry_delay="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) usage_error "unknown argument: $1" ;;
  esac
done

is_number "$poll_interval" || usage_error "--poll-interval must be a number of seconds, got: $poll_interval"
is_positive_int "$refresh_every" || usage_error "--refresh-every must be a positive whole number of seconds"
is_positive_int "$timeout" || usage_error "--timeout must be a positive whole number of seconds"
is_number "$retry_delay" || usage_error "--retry-delay must be a number of seconds, got: $retry_delay"
is_positive_int "$max_poll_errors" || usage_error "--max-poll-errors must be a positive whole number"
[[ "$name" =~ ^[-A-Za-z0-9_.()]{1,64}$ ]] || usage_error "--name must be 1-64 letters, digits, '-', '_', '.', '(' or ')'"
[ -f "$template" ] || usage_error "template not found: $template"
if [ "$default_params" = 1 ] && [ -f "$repo_root/infra/main.parameters.json" ] && [ "$template" = "$repo_root/infra/main.bicep" ]; then
  param_files=("$repo_root/infra/main.parameters.json")
fi
if [ -z "$resource_group" ]; then
  [ -n "$location" ] || usage_error "a subscription-scope deployment needs --location (or AZURE_LOCATION)"
  scope=(sub)
  where=(--location "$location")
else
  scope=(group)
  where=(--resource-group "$resource_group")
fi
command -v az >/dev/null 2>&1 || usage_error "the Azure CLI (az) is not installed"
command -v python3 >/dev/null 2>&1 || usage_error "python3 is needed to expand the parameters file"

workdir="$(mktemp -d)"
interrupted() {
  log "interrupted: deployment '$name' keeps running in Azure; watch it with: az deployment ${scope[*]} show --name $name${resource_group:+ --resource-group $resource_group}"
  exit 130
}
trap 'rm -rf "$workdir"' EXIT
trap interrupted INT TERM

# ---- parameters: expand ${VAR} / ${VAR=default} from the environment, as azd does ---------------------------
az_params=()
i=0
for f in "${param_files[@]}"; do
  [ -f "$f" ] || usage_error "parameters file not found: $f"
  i=$((i + 1))
  expanded="$workdir/parameters-$i.json"
  python3 - "$f" "$expanded" <<'PY' || exit 2
import json, os, re, sys

src, dst = sys.argv[1], sys.argv[2]
pattern = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:=([^}]*))?\}")
missing = []

def expand(value):
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    if not isinstance(value, str):
        return value
    whole = pattern.fullmatch(value)
    def one(m):
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name)
        if got is None or got == "":
            if default is None:
                missing.append(name)
                return ""
            return default
        return got
    out = pattern.sub(one, value)
    # A value that is exactly one ${VAR} and expands to true/false is a boolean, to digits a number, to a JSON
    # array or object that value (azd converts these too, by the parameter's declared type).
    if whole and out in ("true", "false"):
        return out == "true"
    if whole and out.isdigit():
        return int(out)
    if whole and out[:1] in ("[", "{"):
        try:
            return json.loads(out)
        except ValueError:
            return out
    return out

try:
    with open(src, encoding="utf-8-sig") as fh:
        doc = json.load(fh)
except (OSError, ValueError) as e:
    print(f"deploy: parameters file {src} is not valid JSON: {e}", file=sys.stderr)
    sys.exit(2)
doc = expand(doc)
if missing:
    print(f"deploy: {src} needs these environment variables: {', '.join(sorted(set(missing)))}", file=sys.stderr)
    sys.exit(2)
with open(dst, "w", encoding="utf-8") as fh:
    json.dump(doc, fh, indent=2)
PY
  az_params+=(--parameters "@$expanded")
done
for p in "${param_pairs[@]}"; do
  az_params+=(--parameters "$p")
done

# ---- sign-in --------------------------------------------------------------------------------------------------
now() { date +%s; }

github_oidc_login() {
  local url="${ACTIONS_ID_TOKEN_REQUEST_URL}&audience=api://AzureADTokenExchange" response token
  response="$(curl -fsS -H "Authorization: Bearer ${ACTIONS_ID_TOKEN_REQUEST_TOKEN}" "$url")" || return 1
  token="$(printf '%s' "$response" | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])')" || return 1
  az login --service-principal --username "$AZURE_CLIENT_ID" --tenant "$AZURE_TENANT_ID" \
    --federated-token "$token" --allow-no-subscriptions --output none --only-show-errors || return 1
  if [ -n "${AZURE_SUBSCRIPTION_ID:-}" ]; then
    az account set --subscription "$AZURE_SUBSCRIPTION_ID" --only-show-errors || return 1
  fi
}

# Renews the sign-in and proves it works by fetching a token (only its expiry is read, never printed otherwise).
refresh_signin() {
  if [ -n "$refresh_command" ]; then
    bash -c "$refresh_command" >&2 || return 1
  elif [ -n "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ] && [ -n "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ] \
       && [ -n "${AZURE_CLIENT_ID:-}" ] && [ -n "${AZURE_TENANT_ID:-}" ]; then
    github_oidc_login || return 1
  fi
  local expires
  expires="$(az account get-access-token --query expiresOn --output tsv --only-show-errors)" || return 1
  log "sign-in ok; access token valid until ${expires}"
}

refresh_with_retries() {
  local attempt
  for attempt in 1 2 3; do
    if refresh_signin; then return 0; fi
    log "sign-in refresh attempt $attempt failed"
    [ "$attempt" -lt 3 ] && sleep "$(python3 -c "print($retry_delay * $attempt)")"
  done
  return 1
}

az account show --query id --output tsv --only-show-errors >/dev/null \
  || { log "not signed in to Azure: run az login (or azd auth login) first"; exit 2; }
refresh_with_retries || { log "could not obtain an access token; not starting the deployment"; exit 2; }
last_refresh="$(now)"

# ---- start --------------------------------------------------------------------------------------------------
log "starting ${scope[*]}-scope deployment '$name' of $(basename "$template")"
az deployment "${scope[@]}" create --name "$name" "${where[@]}" --template-file "$template" \
  "${az_params[@]}" --no-wait --only-show-errors --output none \
  || { log "Azure refused to start deployment '$name' (see the error above)"; exit 1; }

show_args=(--name "$name")
[ -n "$resource_group" ] && show_args+=(--resource-group "$resource_group")

report_failure() {
  log "deployment '$name' ended in state $1"
  az deployment "${scope[@]}" show "${show_args[@]}" --query properties.error --output json --only-show-errors >&2 || true
  log "failed operations:"
  az deployment operation "${scope[@]}" list "${show_args[@]}" --only-show-errors --output json \
    --query "[?properties.provisioningState=='Failed'].{resource:properties.targetResource.id, status:properties.statusCode, message:properties.statusMessage}" >&2 || true
}

# ---- poll ---------------------------------------------------------------------------------------------------
started="$(now)"
poll_errors=0
signin_lost=0
while true; do
  sleep "$poll_interval"
  if [ $(( $(now) - last_refresh )) -ge "$refresh_every" ]; then
    if refresh_with_retries; then
      last_refresh="$(now)"
      signin_lost=0
    else
      signin_lost=1
      log "could not renew the sign-in; polling on while the current token lasts"
    fi
  fi
  if state="$(az deployment "${scope[@]}" show "${show_args[@]}" --query properties.provisioningState --output tsv --only-show-errors 2>"$workdir/poll.err")"; then
    poll_errors=0
  else
    poll_errors=$((poll_errors + 1))
    log "poll failed ($poll_errors/$max_poll_errors): $(head -c 300 "$workdir/poll.err" | tr '\n' ' ')"
    if grep -q "AADSTS" "$workdir/poll.err"; then
      # The token is gone: try to sign in again right away rather than at the next scheduled refresh.
      if refresh_with_retries; then last_refresh="$(now)"; signin_lost=0; else signin_lost=1; fi
    fi
    if [ "$poll_errors" -ge "$max_poll_errors" ]; then
      if [ "$signin_lost" = 1 ]; then
        log "sign-in lost: the outcome of deployment '$name' is unknown; it keeps running in Azure"
      else
        log "giving up polling: the outcome of deployment '$name' is unknown; it keeps running in Azure"
      fi
      log "check it with: az deployment ${scope[*]} show --name $name${resource_group:+ --resource-group $resource_group}"
      exit 3
    fi
    continue
  fi
  elapsed=$(( $(now) - started ))
  case "$state" in
    Succeeded)
      log "deployment '$name' succeeded after ${elapsed}s"
      exit 0 ;;
    Failed|Canceled)
      report_failure "$state"
      exit 1 ;;
    *)
      log "deployment '$name': $state (${elapsed}s)" ;;
  esac
  if [ "$elapsed" -ge "$timeout" ]; then
    if [ "$cancel_on_timeout" = 1 ]; then
      log "timeout after ${elapsed}s: cancelling deployment '$name'"
      az deployment "${scope[@]}" cancel "${show_args[@]}" --only-show-errors || log "cancel failed"
    else
      log "timeout after ${elapsed}s: deployment '$name' is still $state and keeps running in Azure"
    fi
    exit 3
  fi
done
