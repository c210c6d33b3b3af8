"""probgen.diffusion (being built)."""
