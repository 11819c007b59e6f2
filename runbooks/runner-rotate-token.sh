#!/usr/bin/env bash
# Re-key a runner: it registers again with a one-time token (see runner-rotate-token.md).
#
#   runner-rotate-token.sh RUNNER             say what would happen (dry run)
#   runner-rotate-token.sh RUNNER --confirm   rotate: new credential, old one ends
#
# RUNNER is a container name (ci-pool-linux-1) or a live runner id on it.
set -euo pipefail

ci=${CI_POOL_CLI:-ci-pool}
runner=""
confirm=()
while [ $# -gt 0 ]; do
  case "$1" in
    --confirm) confirm=(--confirm); shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) echo "runner-rotate-token: unknown option $1" >&2; exit 2 ;;
    *) runner=$1; shift ;;
  esac
done
[ -n "$runner" ] || { sed -n '2,8p' "$0" >&2; exit 2; }

"$ci" provision rotate "$runner" "${confirm[@]}"
if [ ${#confirm[@]} -eq 1 ]; then
  "$ci" runner list
fi
