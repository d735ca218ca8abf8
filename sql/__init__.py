"""The queries (installed as `potstill.sql`): one per file, staged CTEs ending in
`select * from final`; `analysis/` holds the label-noise queries."""
