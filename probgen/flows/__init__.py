"""probgen.flows (being built)."""
