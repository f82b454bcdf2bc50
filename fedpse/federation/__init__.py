"""fedpse.federation."""
