"""Beam PTransforms and DoFns: thin wrappers over the plain functions in potstill/ and models/."""
