"""fedpse.distill."""
