"""Kling 3.0 and Kling Video O3 video generation: typed core, sandbox, CLI."""

__version__ = "0.1.0"
