"""fedpse.results."""
