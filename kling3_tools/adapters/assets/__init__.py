"""Local files in, videos kept: checks, the asset store, and local inputs turned into URLs."""
