"""The durable transcript of every session (events and cells, written behind), its export
as a Jupyter notebook, and the stores that keep it (SQLite by default)."""
