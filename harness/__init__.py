"""What the tests and the benchmarks both run against, on loopback only: a throwaway PostgreSQL cluster
(`postgres`), a fake Discord API (`fake_discord`), a webhook receiver, `kling3` processes, raw MCP stdio and
waiting without fixed sleeps (`helpers`). Not shipped in the wheel."""
