"""potstill core: the config, the column contract, input records, curation and publishing."""
__version__ = "0.1.0"
