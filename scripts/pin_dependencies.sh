#!/usr/bin/env bash
# Regenerate deploy/constraints.txt: every runtime dependency of the image, resolved in a throwaway
# virtualenv and pinned (the image installs with `pip install -c deploy/constraints.txt`).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="mcp,discord,postgres,storage,stories,metrics"
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet ".[$extras]"
{
    echo "# Every runtime dependency of the image (extras ${extras//,/, }) pinned, for builds that come out"
    echo "# the same: pip install -c deploy/constraints.txt \".[...]\". Regenerate with scripts/pin_dependencies.sh"
    echo "# after changing a dependency in pyproject.toml."
    "$venv/bin/pip" freeze --exclude kling3-tools
} > deploy/constraints.txt
