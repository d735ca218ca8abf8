"""Is the teacher worth its cost, and how far to trust it, judged on the gold seed rows:
`tuning` (the setup search), `audit` (the driver's entry: search, audit, gate), `gate`,
`evaluate` (the teacher on the test split), `trust` (the gold rows' own classifier and the
per-class trust recipe), `fallback` (that classifier as the teacher when the gate finds the LLM
weak). May import `potstill.models.teacher` and below; not `saliency` or
`student`.
"""
