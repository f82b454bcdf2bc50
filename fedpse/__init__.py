"""fedpse: federated zero-shot test-time personalization of speech enhancement by knowledge distillation."""

__version__ = "0.1.0"
