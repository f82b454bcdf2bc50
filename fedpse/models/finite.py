"""Numbers are finite or the run says why: a model (student, teacher, ONNX) whose output holds NaN or inf is an
error naming the model and the user, raised where outputs are distilled from or scored, never written as a score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedpse.models.identity import describe_model


class NonFiniteOutputError(ValueError):
    """A model produced NaN or inf. ``role`` is ``"student"`` or ``"teacher"``, ``model`` its architecture (or ONNX
    path), ``user`` whose audio it ran on (``None`` when not known here).

    A teacher's NaN is the server's (or the run's) fault and stops the run; a student's NaN on a device is that
    user's failure (e.g. a diverged adaptation)."""

    def __init__(self, role: str, model: str, user: str | None, reason: str):
        self.role, self.model, self.user, self.reason = role, model, user, reason
        who = f" for user {user}" if user else ""
        super().__init__(f"{role} {model}{who}: {reason}")

    @property
    def device_fault(self) -> bool:
        """Whether only this user's round fails (a student diverged) rather than the whole run (a teacher)."""
        return self.role == "student"


def check_outputs(
    outputs: Sequence[np.ndarray], role: str, model: object, user: str | None
) -> Sequence[np.ndarray]:
    """``outputs`` (one array per input chunk) unchanged, or ``NonFiniteOutputError`` if any holds NaN or inf."""
    bad = [i for i, out in enumerate(outputs) if not np.isfinite(out).all()]
    if bad:
        raise NonFiniteOutputError(
            role,
            describe_model(model),
            user,
            f"its output holds NaN or inf on {len(bad)} of {len(outputs)} input chunk(s) (first: chunk {bad[0]}); "
            "expected finite audio (are its weights NaN, or does it divide by zero on this input?)",
        )
    return outputs
