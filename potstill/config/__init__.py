"""The job's configuration: one typed, validated pydantic model loaded from YAML.

`core` holds the model, its loading and the top-level sections; `stages` the optional stages'
blocks (generation, saliency, signals, budget); `quality` the audit, setup search, student and
validation blocks; `reference` the generated docs/config.md section; `starter` a first job
(`potstill init`: seed and test splits of one labelled file, a commented config). Imports only
`potstill.rows` (the encoding check; the starter's reading of the labelled file) from the library.
"""
