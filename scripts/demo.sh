#!/usr/bin/env bash
# Provision the demo project (envs/demo.yml) on the local Docker Engine and print its URLs.
#   scripts/demo.sh            provision (idempotent: a second run changes nothing)
#   scripts/demo.sh --destroy  remove it again, data included
source "$(dirname "$0")/bootstrap.sh"
if [ "${1:-}" = "--destroy" ]; then
  exec .venv/bin/invoke destroy --env=demo --project=demo --delete-data --yes --no-backup
fi
.venv/bin/invoke provision --env=demo --project=demo
.venv/bin/invoke outputs --env=demo --project=demo
