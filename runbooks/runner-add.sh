#!/usr/bin/env bash
# Add runner containers for one capability on an Incus host (see runner-add.md).
#
#   runner-add.sh --host H --capability C --count N [plan options]   plan only (dry run)
#   runner-add.sh --plan-id ID --confirm                             apply that reviewed plan
#   runner-add.sh --host H --capability C --count N ... --confirm    plan, then apply it
#
# Plan options are those of `ci-pool provision plan` (--port, --user, --known-hosts,
# --identity, --credentials, --image, --package). Nothing changes without --confirm.
set -euo pipefail

ci=${CI_POOL_CLI:-ci-pool}
confirm=0
plan_id=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --confirm) confirm=1; shift ;;
    --plan-id) plan_id=${2:?--plan-id needs a value}; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ -z "$plan_id" ]; then
  if [ ${#args[@]} -eq 0 ]; then
    sed -n '2,10p' "$0" >&2
    exit 2
  fi
  # A blocked plan exits non-zero: its blockers are printed and the script stops here.
  plan_out=$("$ci" provision plan "${args[@]}") || { rc=$?; printf '%s\n' "$plan_out"; exit "$rc"; }
  printf '%s\n' "$plan_out"
  plan_id=$(printf '%s\n' "$plan_out" | sed -n '1s/^plan \([0-9a-f]\{16\}\):.*/\1/p')
  [ -n "$plan_id" ] || { echo "runner-add: no plan id in the output above" >&2; exit 3; }
elif [ ${#args[@]} -gt 0 ]; then
  echo "runner-add: give either --plan-id or plan options, not both" >&2
  exit 2
fi

if [ "$confirm" -ne 1 ]; then
  echo "dry run: nothing was changed. To apply this plan: $0 --plan-id $plan_id --confirm"
  exit 0
fi

"$ci" provision apply --plan-id "$plan_id" --confirm
"$ci" runners
