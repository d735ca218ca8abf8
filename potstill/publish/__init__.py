"""From staged rows to an immutable dataset version: the column `contract` (one pyarrow schema),
DuckDB `curation` and the budget's `selection`, the great-expectations gate (`expectations`),
`versions` (publish atomically, list, resolve), the dataset `card` and `export`.

May import `potstill.config`, `potstill.rows` and the ground floor (`store`, `memory`,
`progress`); never `reports` or `job`.
"""
