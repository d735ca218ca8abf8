"""Saliency rationales (arXiv 2409.12586): `attribution` (captum over the teacher's forward,
sub-words merged into words) and `faithfulness` (a deletion test). May import
`potstill.models.teacher` and below; not `quality` or `student`.
"""
