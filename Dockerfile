# One image for every role: poller workers, the Discord bot, the MCP server over HTTP, migrations.
# Base image and every Python dependency pinned (deploy/constraints.txt), so a rebuild gives the same image.
FROM python:3.11.13-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY deploy/constraints.txt ./deploy/constraints.txt
COPY kling3_tools ./kling3_tools
COPY bots ./bots
RUN pip install --no-cache-dir -c deploy/constraints.txt ".[mcp,discord,postgres,storage,stories,metrics]" \
    && useradd --create-home --uid 10001 kling3
USER kling3
# /healthz, /readyz and /metrics of the long-running roles (poller, bot, mcp); one-shot commands serve nothing.
ENV KLING_METRICS__LISTEN=0.0.0.0:9464
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "kling3_tools.ops.probe", "/healthz"]
ENTRYPOINT ["kling3"]
CMD ["--help"]
