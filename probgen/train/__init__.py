"""probgen.train (being built)."""
