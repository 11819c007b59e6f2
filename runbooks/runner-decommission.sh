#!/usr/bin/env bash
# Remove a runner container for good (see runner-decommission.md): drain its workers, wait
# for their running jobs, delete the container, revoke its tokens.
#
#   runner-decommission.sh RUNNER [--timeout SECONDS]             dry run
#   runner-decommission.sh RUNNER [--timeout SECONDS] --confirm   do it
set -euo pipefail

ci=${CI_POOL_CLI:-ci-pool}
runner=""
timeout=3600
confirm=()
while [ $# -gt 0 ]; do
  case "$1" in
    --confirm) confirm=(--confirm); shift ;;
    --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    -*) echo "runner-decommission: unknown option $1" >&2; exit 2 ;;
    *) runner=$1; shift ;;
  esac
done
[ -n "$runner" ] || { sed -n '2,7p' "$0" >&2; exit 2; }

"$ci" runners
"$ci" provision remove "$runner" --timeout "$timeout" "${confirm[@]}"
