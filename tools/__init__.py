"""Developer tools for this repository (not shipped, not imported by product code)."""
