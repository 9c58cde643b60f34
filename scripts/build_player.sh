#!/usr/bin/env bash
# Rebuild kling3_tools/mcp/player/player.html (the one self-contained page of the in-chat player) and the
# browser test's host bridge, from the pinned official @modelcontextprotocol/ext-apps and esbuild.
# Run it after changing player.js or player.src.html, or to move to a new ext-apps version (change the pin).
set -euo pipefail
EXT_APPS=2.0.4
ESBUILD=0.28.2
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --silent --no-audit --no-fund "@modelcontextprotocol/ext-apps@$EXT_APPS" "esbuild@$ESBUILD" >/dev/null
cp "$here/kling3_tools/mcp/player/player.js" .
npx esbuild player.js --bundle --format=esm --minify --target=es2020 --outfile=bundle.js --log-level=warning
python3 - "$here" <<'PY'
import sys
from pathlib import Path
here = Path(sys.argv[1]) / "kling3_tools" / "mcp" / "player"
bundle = Path("bundle.js").read_text().replace("</script", "<\\/script")
page = (here / "player.src.html").read_text().replace("<script>/*BUNDLE*/</script>", f'<script type="module">{bundle}</script>')
(here / "player.html").write_text(page)
PY
cp node_modules/@modelcontextprotocol/ext-apps/LICENSE "$here/kling3_tools/mcp/player/LICENSE.ext-apps"
cat > host.js <<'JS'
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";
window.AppBridge = AppBridge;
window.PostMessageTransport = PostMessageTransport;
JS
npx esbuild host.js --bundle --format=iife --minify --target=es2020 --outfile="$here/tests/apps_host/bridge.js" --log-level=warning
echo "player.html: $(wc -c < "$here/kling3_tools/mcp/player/player.html") bytes (ext-apps $EXT_APPS)"
