# The Vault (or OpenBao) policy the connections bot needs: nothing more.
#
# It assumes the KV version 2 mount `secret` (CONNECTIONS_VAULT_MOUNT) and paths that start with
# `connections/` (CONNECTIONS_SECRET_PATH, default connections/{team}/{provider}/{name}). Change
# both prefixes below if you change either setting.
#
#   vault policy write connections-bot docs/vault-policy.hcl

# Write a connection's secret (create: a new path; update: a new version when a credential is
# rotated) and read the current version back to re-test it.
path "secret/data/connections/*" {
  capabilities = ["create", "update", "read"]
}

# read: the versions of a secret, to tell a retried write from a change someone else made;
# update: set the custom metadata (provider, connection id, owner, approver, approval time);
# delete: remove every version and the metadata when a connection is removed;
# list: lets whoever holds the bot's identity see what it wrote (`vault kv list`); the bot itself
# never lists.
path "secret/metadata/connections/*" {
  capabilities = ["read", "update", "delete", "list"]
}

# The health check (/healthz) looks the bot's own token up. Vault's built-in `default` policy
# grants this too; it is repeated here so that this policy is enough on its own.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
