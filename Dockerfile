# One image for every role: poller workers, the Discord bot, the MCP server over HTTP, migrations.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kling3_tools ./kling3_tools
COPY bots ./bots
RUN pip install --no-cache-dir ".[mcp,discord,postgres,storage]" \
    && useradd --create-home --uid 10001 kling3
USER kling3
ENTRYPOINT ["kling3"]
CMD ["--help"]
