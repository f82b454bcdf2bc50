"""fedpse.federation: the federated run. The only package of fedpse that imports ``flwr`` and ``ray``.
Its modules, in the order a run meets them:

    prepare.py      before a run: check the config and folders, take and create the run directory (or ready an
                    interrupted one to resume)
    runner.py       run prepared runs in one Flower simulation on Ray (``simulate``, ``simulate_many``, ``resume``)
    server_app.py   the ServerApp: registration, rounds, scoring, the run directory (``Federation``)
    accounts.py     the server's per-user account, users.csv rows and summary.json
    resume.py       what a resumed run keeps (committed work) and the undo note of a user's round
    strategies/     the delivery modes, one file each (``base.py``: what a mode is and may override)
    client_app.py   the ClientApp: one user's device answering the server's messages
    device.py       a device's on-disk state (its noisy audio, student, cached teacher and targets)
    fleet.py        the devices' profiles, availability windows, simulated clock and injected faults
    plan.py         the run both sides share: users, streaming schedule, frozen models, selection
    ledger.py       every message's bytes, audio, MACs and simulated seconds
    payloads.py     how weights, targets and audio are encoded in messages
    evaluator.py    scores students on users' held-out test sets (simulation-only observer)
    interrupts.py   Ctrl-C / SIGTERM: stop cleanly, leave the run resumable
    engine.py       a faster feeder for Flower's simulation engine
"""

import os

# Flower reads this once, when first imported: telemetry is off unless the user turned it on explicitly.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
