#!/usr/bin/env bash
# Reference sender for the Vermieterhelden WordPress plugin: posts a lead JSON file to the
# gateway, signed exactly as Standard Webhooks specifies (what the plugin must do, too).
#
#   VERMIETERHELDEN_WEBHOOK_SECRET=whsec_… tools/send-lead/send-lead.sh \
#       https://api.bitbylaw.com/api/leads/vermieterhelden docs/leads/examples/mieter.json [webhook-id]
#
# Signature: webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>, where
# key = base64-decode(secret without "whsec_"), timestamp = Unix seconds, body = the exact bytes
# sent. The webhook-id is the idempotency key: to resend a delivery that failed (timeout, 5xx),
# pass the SAME id again (third argument); a new form submission needs a new id.
# Needs: bash, curl, openssl, base64, od.
set -euo pipefail

url=${1:?usage: send-lead.sh URL FILE.json [webhook-id]}
file=${2:?usage: send-lead.sh URL FILE.json [webhook-id]}
secret=${VERMIETERHELDEN_WEBHOOK_SECRET:?set VERMIETERHELDEN_WEBHOOK_SECRET (whsec_…)}
id=${3:-msg_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}
ts=$(date +%s)

key_hex=$(printf '%s' "${secret#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
sig=$( { printf '%s.%s.' "$id" "$ts"; cat "$file"; } \
  | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary | base64 | tr -d '\n')

echo "webhook-id: $id" >&2
curl -sS -i -X POST "$url" \
  -H 'content-type: application/json' \
  -H "webhook-id: $id" \
  -H "webhook-timestamp: $ts" \
  -H "webhook-signature: v1,$sig" \
  --data-binary "@$file"
echo
