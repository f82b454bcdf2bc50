"""fedpse.models."""
