"""fedpse.federation: Flower ClientApp (one user's device), ServerApp + delivery-mode strategies, cost ledger,
evaluator and the Ray simulation runner. The only package of fedpse that imports ``flwr`` and ``ray``."""

import os

# Flower reads this once, when first imported: telemetry is off unless the user turned it on explicitly.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
