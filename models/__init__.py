"""Everything about models, importable without Beam."""
