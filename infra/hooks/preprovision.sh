#!/usr/bin/env bash
# azd preprovision hook: what the template cannot check by itself.
# 1. VNet integration (VNET_INTEGRATION=true, or a closed / firewalled vault) delegates a subnet to
#    Microsoft.App/environments: the Microsoft.App resource provider must be registered in the subscription, or
#    the deployment fails. It is registered here when it is not.
# 2. `azd down` deletes the vaults, but purge protection keeps them soft-deleted — and their names reserved —
#    for the retention period (90 days), so a plain `azd up` would fail. When a vault of this environment is
#    soft-deleted and not live, the template is told to recover it (KEYVAULT_CREATE_MODE /
#    OWN_KEYVAULT_CREATE_MODE=recover): it comes back with its secrets (owners' refresh tokens, PATs), nobody
#    signs in again. To start afresh instead, set KEYVAULT_NAME_SUFFIX (new names; docs/deploy.md).
set -euo pipefail

truthy() { [ "${1:-}" = "true" ] || [ "${1:-}" = "True" ]; }

ranges="${KEYVAULT_ALLOWED_IP_RANGES:-[]}"
if truthy "${VNET_INTEGRATION:-false}" || [ "${KEYVAULT_PUBLIC_NETWORK_ACCESS:-Enabled}" = "Disabled" ] \
   || { [ -n "$ranges" ] && [ "$ranges" != "[]" ]; }; then
  state="$(az provider show --namespace Microsoft.App --query registrationState --output tsv 2>/dev/null || true)"
  if [ "$state" != "Registered" ]; then
    echo "preprovision: registering the Microsoft.App resource provider (VNet integration needs it; was: ${state:-unknown})"
    az provider register --namespace Microsoft.App --wait
  fi
fi

# Vault names of this environment's last provision (template outputs kept in the azd environment). A changed
# KEYVAULT_NAME_SUFFIX means new names: nothing to recover.
recover_mode() {
  local name="$1"
  if [ -z "$name" ] || [ "${KEYVAULT_NAME_SUFFIX:-}" != "${KEYVAULT_NAME_SUFFIX_USED:-}" ]; then
    echo default
  elif az keyvault show --name "$name" --query name --output tsv >/dev/null 2>&1; then
    echo default
  elif az keyvault show-deleted --name "$name" --query name --output tsv >/dev/null 2>&1; then
    echo recover
  else
    echo default
  fi
}
consumer_mode="$(recover_mode "${AZURE_KEY_VAULT_NAME:-}")"
own_mode="$(recover_mode "${AZURE_OWN_KEY_VAULT_NAME:-}")"
for pair in "KEYVAULT_CREATE_MODE:$consumer_mode:${AZURE_KEY_VAULT_NAME:-}" \
            "OWN_KEYVAULT_CREATE_MODE:$own_mode:${AZURE_OWN_KEY_VAULT_NAME:-}"; do
  IFS=: read -r var mode name <<<"$pair"
  if [ "$mode" = recover ]; then
    echo "preprovision: $name is soft-deleted (azd down); recovering it with its secrets"
  fi
  if [ "${!var:-default}" != "$mode" ]; then
    azd env set "$var" "$mode"
  fi
done
