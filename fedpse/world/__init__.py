"""fedpse.world."""
