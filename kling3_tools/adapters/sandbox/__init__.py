"""The local Kling-compatible sandbox: `options` (knobs), `app` (the ASGI app), `server` (runners)."""
