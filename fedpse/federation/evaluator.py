"""The evaluator: scores each user's current student on the user's held-out test set.

It owns the clean references (nothing it reads is ever put in a message) and reads a device's student from the
device's storage as a simulation-only observer (not a message, not in the ledger). Scores of models that do not
change during a run (noisy mixture, generic student, teacher) are computed once per user and kept in-process and in
the result cache (``federation.cache_dir``, see ``distill/cache.py``), keyed by world, user and model weights, so
later runs of a sweep reuse them. Models are scored on ``device.scoring`` (scores computed on a GPU are cached apart
from the CPU's: they differ by float rounding). With ``scoring.dnsmos`` each model's outputs (and the noisy
mixtures) are also scored by DNSMOS P.835, a non-intrusive score that never sees the clean references; like SI-SDR,
that is the simulator's evaluation and is charged to no one.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from fedpse.audio.metrics import pesq_wb, si_sdr, stoi
from fedpse.distill.adapt import enhance
from fedpse.distill.cache import ResultCache, model_key
from fedpse.federation.device import Device, generic_student
from fedpse.federation.plan import RunPlan
from fedpse.models.accelerator import model_device, role_device
from fedpse.models.checkpoints import load_checkpoint
from fedpse.models.dnsmos import DnsmosScorer, load_dnsmos
from fedpse.models.finite import check_outputs
from fedpse.results.store import DNSMOS_MODELS

_BASELINES: dict[str, dict[str, float]] = {}


class Evaluator:
    """Scores students of run ``plan`` on held-out test sets; optional PESQ and STOI."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        self.pesq_stoi = plan.cfg.federation.pesq_stoi
        self.device = role_device(plan.cfg, "scoring")
        self.dnsmos: DnsmosScorer | None = load_dnsmos(self.device) if plan.cfg.scoring.dnsmos else None
        self._generic = generic_student(plan).to(self.device)
        self._teacher: nn.Module | None = None
        self._keys = {"generic": model_key(self._generic)}
        self.cache = ResultCache(plan.cfg.federation.cache_dir)
        self._test_set: tuple[str | None, list] = (None, [])

    @property
    def generic(self) -> nn.Module:
        return self._generic

    @property
    def teacher(self) -> nn.Module:
        if self._teacher is None:
            self._teacher = self.plan.teacher().to(self.device)
            self._keys["teacher"] = model_key(self._teacher)
        return self._teacher

    def test_set(self, user: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """The user's (noisy, clean) test mixtures, decoded once for the user scored last (bounded memory)."""
        if self._test_set[0] != user:
            self._test_set = (user, self.plan.world.test_set(user))
        return self._test_set[1]

    def _scores(self, model: nn.Module, user: str, name: str) -> dict[str, float]:
        """Scores of ``model`` (the ``teacher`` or a student) on ``user``'s test set; ``NonFiniteOutputError`` when
        its outputs hold NaN or inf, so no NaN score is ever cached or written."""
        test_set = self.test_set(user)
        clean = [y for _, y in test_set]
        role = "teacher" if name == "teacher" else "student"
        if model_device(model) != self.device:  # a student trained elsewhere: scored here, left where it is
            model = copy.deepcopy(model).to(self.device)
        est = check_outputs(enhance(model, [x for x, _ in test_set]), role, model, user)
        out = {f"si_sdr_{name}": float(np.mean([si_sdr(e, y) for e, y in zip(est, clean, strict=True)]))}
        if self.pesq_stoi:
            out[f"pesq_{name}"] = float(np.nanmean([pesq_wb(e, y) for e, y in zip(est, clean, strict=True)]))
            out[f"stoi_{name}"] = float(np.mean([stoi(e, y) for e, y in zip(est, clean, strict=True)]))
        out.update(self._dnsmos(est, name))
        return out

    def _dnsmos(self, audio: list[np.ndarray], name: str) -> dict[str, float]:
        """``dnsmos_{sig,bak,ovr}_<name>``: DNSMOS of ``audio`` (a model's outputs or the noisy mixtures, never
        the clean references), mean over the test mixtures; nothing when ``scoring.dnsmos`` is off."""
        if self.dnsmos is None or name not in DNSMOS_MODELS:
            return {}
        scores = self.dnsmos.score_many(list(audio))
        return {f"dnsmos_{q}_{name}": float(np.mean([s[q] for s in scores])) for q in ("sig", "bak", "ovr")}

    def baseline(self, user: str) -> dict[str, float]:
        """Noisy, generic-student and teacher scores of ``user`` (cached)."""
        teacher = self.teacher
        key = ":".join(
            [
                self.plan.world.manifest["key"],
                user,
                self._keys["generic"],
                self._keys["teacher"],
                str(self.pesq_stoi),
                *(["dnsmos"] if self.dnsmos is not None else []),
                *([self.device.type] if self.device.type != "cpu" else []),
            ]
        )
        if key not in _BASELINES:
            _BASELINES[key] = self.cache.scores(key, lambda: self._baseline(user, teacher))
        return dict(_BASELINES[key])

    def _baseline(self, user: str, teacher: nn.Module) -> dict[str, float]:
        test_set = self.test_set(user)
        with torch.inference_mode():
            scores = {"si_sdr_noisy": float(np.mean([si_sdr(x, y) for x, y in test_set]))}
            scores.update(self._dnsmos([x for x, _ in test_set], "noisy"))
            scores.update(self._scores(self._generic, user, "generic"))
            scores.update(self._scores(teacher, user, "teacher"))
        return scores

    def score(self, model: nn.Module, user: str, name: str) -> dict[str, float]:
        """``si_sdr_<name>`` (and PESQ/STOI when enabled) of ``model`` on ``user``'s test set."""
        with torch.inference_mode():
            return self._scores(model, user, name)

    def personalized(self, user: str, model: nn.Module | None = None) -> dict[str, float]:
        """Scores of the student the user's device holds now (or of ``model``, e.g. in the bare benchmark loop)."""
        with torch.inference_mode():
            return self._scores(model or Device(self.plan, user).student(), user, "personalized")

    def unguarded(self, user: str, guard: dict, personalized: dict[str, float]) -> dict[str, float]:
        """``si_sdr_unguarded``: the fine-tuned student as if the guard had adopted it. Where it did, that is the
        ``personalized`` score; where it kept the generic student, the student it turned down is scored (kept for
        this in the device's or, cloud_student, the server's storage). Nothing when the guard is off."""
        if not guard:
            return {}
        if guard["guard_decision"] == "adopted":
            return {"si_sdr_unguarded": personalized["si_sdr_personalized"]}
        path = Device(self.plan, user).unguarded_path
        if not path.is_file():
            path = self.plan.server_dir(user) / path.name
        with torch.inference_mode():
            scores = self._scores(load_checkpoint(path)[0], user, "unguarded")
        return {"si_sdr_unguarded": scores["si_sdr_unguarded"]}
