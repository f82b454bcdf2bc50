"""fedpse.audio."""
