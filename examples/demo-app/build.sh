#!/bin/sh
# The demo's "build": proves it runs on a clean checkout of the exact commit.
set -e
echo "building demo-app $(cat VERSION) at commit ${CI_POOL_COMMIT_SHA}"
echo "runner: ${CI_POOL_RUNNER_ID}, job: ${CI_POOL_JOB_ID}, attempt ${CI_POOL_ATTEMPT}"
for step in compile test package; do
  echo "[$step] ok"
  sleep 0.3
done
mkdir -p dist && echo "demo-app $(cat VERSION)" > dist/demo-app.txt
echo "built dist/demo-app.txt"
