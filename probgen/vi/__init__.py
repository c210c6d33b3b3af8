"""probgen.vi (being built)."""
