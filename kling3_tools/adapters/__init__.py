"""What talks to the world: the API client and its wire format, the HTTP pool, downloads, the task stores,
the asset store and local files, and the sandbox API. Built on `domain`; knows no workflow or front end."""
