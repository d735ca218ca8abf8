"""The read side of published versions: `analysis` (list, diff, read-only SQL, label issues),
`report` (report.html), `plots` (inline SVG) and `tables` (query results for people and for
programs). May import `potstill.publish` and everything below it; never `job`.
"""
