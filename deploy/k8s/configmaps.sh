#!/usr/bin/env bash
# Regenerates the inventory and rules ConfigMaps of deploy/k8s/configmaps.yaml from
# deploy/inventory.csv and rules/*/ (every rule file; the *.tests.yml cases stay out). The
# first document, palisade.toml as deployed on Kubernetes, is edited by hand and kept.
# tests/it/observability.rs fails when the maps and the files differ: run this after changing
# a shipped rule or the inventory.
#
#   deploy/k8s/configmaps.sh        # rewrites deploy/k8s/configmaps.yaml in place
set -euo pipefail
cd "$(dirname "$0")/../.."
out=deploy/k8s/configmaps.yaml

header() {
  printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n' "$1"
  printf '  namespace: palisade\n  labels: {app.kubernetes.io/name: palisade}\ndata:\n'
}
entry() { # key, file: a literal block, indented by four spaces (empty lines stay empty)
  printf '  %s: |\n' "$1"
  sed -e 's/^\(.\)/    \1/' "$2"
}

# Kubernetes ConfigMap keys are flat: two rule files of one name would collide.
dupes=$(find rules -mindepth 2 -maxdepth 2 -type f \( -name '*.sql' -o -name '*.yml' -o -name '*.yaml' \) \
  ! -name '*.tests.yml' ! -name '*.tests.yaml' -printf '%f\n' | sort | uniq -d)
if [[ -n "$dupes" ]]; then
  echo "rule file names must be unique across rules/*/ for the ConfigMap: $dupes" >&2
  exit 1
fi

tmp=$(mktemp)
# Keep everything before the inventory map (the header comment and palisade-config).
awk '/^---$/ { doc++ } { if (doc < 1) print }' "$out" > "$tmp"
{
  header palisade-inventory
  entry inventory.csv deploy/inventory.csv
  header palisade-rules
  find rules -mindepth 2 -maxdepth 2 -type f \( -name '*.sql' -o -name '*.yml' -o -name '*.yaml' \) \
    ! -name '*.tests.yml' ! -name '*.tests.yaml' | sort | while read -r f; do
    entry "$(basename "$f")" "$f"
  done
} >> "$tmp"
mv "$tmp" "$out"
