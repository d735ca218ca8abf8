"""The job's configuration: one typed, validated pydantic model loaded from YAML.

`core` holds the model, its loading and the top-level sections; `stages` the optional stages'
blocks (generation, saliency, signals, budget); `quality` the audit, setup search, student and
validation blocks. Imports only `potstill.rows.readers` (the encoding check) from the library.
"""
