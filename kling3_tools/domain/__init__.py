"""What the product is about, with no I/O: requests and their fields, the catalog of task types and prices,
errors, task and story records, and the ledger's rules. Imports nothing of ours from outside this folder."""
