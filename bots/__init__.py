"""The Discord bot front end."""
