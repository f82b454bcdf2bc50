"""The personalization guard: after a user's adaptation, keep the fine-tuned student only if the teacher and the
student look no worse than the generic student, judged without the user's clean speech (a device has none).

``adapt.guard=on`` scores the models on *probe mixtures*: clean probe speech that is not the user's (the built-in
espeak synthesizer, a fixed seeded set of voices of their own, prefix ``gv``, apart from users', pretraining and
babble voices) mixed with the user's own noise estimate, the residual of the generic student on the user's held-out
unlabeled chunks (x − g(x): not the teacher's residual, which is zero for a teacher that returns its input), at the
user's estimated SNR (energy of g(x) over that residual). The probe speech is clean and is no user's data, so scoring
SI-SDR against it is legal on a device. ``adapt.guard=dnsmos`` scores DNSMOS OVR of the outputs on the held-out
chunks instead (``fedpse.models.dnsmos``, an optional extra); the teacher's outputs there are the pseudo-targets.

Two checks, both against the generic student: the **teacher check** (the teacher's lead, where the teacher or a
``TeacherCheck`` made where it is, is at hand) must be at least ``-adapt.guard_margin_db``; the **student check**
(the fine-tuned student) at least ``-adapt.guard_student_margin_db``, a wide backstop: probe voices are not the
user's voice, so a student personalized to its user's voice scores lower on them than it deserves. If either fails,
the generic student is kept. The noise estimate also holds the generic student's own errors on the user's speech
(speech leakage). Measured figures: docs/models.md.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from fedpse.audio.io import SAMPLE_RATE
from fedpse.audio.metrics import si_sdr
from fedpse.config import AdaptConfig
from fedpse.models.accelerator import model_device
from fedpse.models.macs import forward_macs

PROBE_SECONDS = 4.0  # one probe mixture
PROBE_VOICES = 8  # probe speakers, used in turn
PROBE_SEED = 0x6A7D  # fixed: every world and run gets the same probe speech
PROBE_PREFIX = "gv"  # voice ids gv-000 ... (users: uv, pretraining: pv, babble talkers: bv)
SNR_RANGE_DB = (-5.0, 20.0)  # the user's estimated SNR, clipped to where the world's users are
DNSMOS_SCALE = 10.0  # guard=dnsmos scores are 10 x OVR, so guard_margin_db reads as tenths of a MOS point


@dataclasses.dataclass
class GuardVerdict:
    """What the guard decided for one adaptation, on what scores (dB of SI-SDR, or 10 x DNSMOS OVR) and at what cost."""

    decision: str  # adopted | kept_generic
    generic_score: float
    personalized_score: float
    teacher_lead: float  # teacher minus generic score (NaN: not measured)
    macs: float  # forward passes of the guard (and DNSMOS), charged where the adaptation ran

    @property
    def adopted(self) -> bool:
        return self.decision == "adopted"


@lru_cache(maxsize=4)
def probe_speech(count: int, seconds: float = PROBE_SECONDS) -> tuple[np.ndarray, ...]:
    """``count`` clips of clean probe speech, ``seconds`` each: the fixed probe voices in turn, grammar sentences.
    Deterministic (same clips in every process); synthesized once per process."""
    from fedpse.world.speech import seeded_rng, tts_stream
    from fedpse.world.voices import sample_voices

    voices = sample_voices(PROBE_VOICES, seeded_rng(PROBE_SEED, 1), PROBE_PREFIX)
    clips = []
    for k in range(count):
        clip = tts_stream(voices[k % len(voices)], seconds, seeded_rng(PROBE_SEED, 2, k)).audio
        clip.setflags(write=False)
        clips.append(clip)
    return tuple(clips)


def noise_estimate(
    generic_outputs: list[np.ndarray], chunks: list[np.ndarray]
) -> tuple[list[np.ndarray], float]:
    """The user's noise as the generic student hears it: residuals x − g(x) of ``chunks``, and the estimated SNR
    (dB, energy of g(x) over the residuals, clipped to ``SNR_RANGE_DB``)."""
    residuals = [np.asarray(x, np.float32) - s for x, s in zip(chunks, generic_outputs, strict=True)]
    speech = sum(float(np.sum(np.square(s, dtype=np.float64))) for s in generic_outputs)
    noise = sum(float(np.sum(np.square(r, dtype=np.float64))) for r in residuals)
    snr_db = 10 * math.log10((speech + 1e-12) / (noise + 1e-12))
    return residuals, float(np.clip(snr_db, *SNR_RANGE_DB))


def probe_mixtures(
    residuals: list[np.ndarray], snr_db: float, level_rms: float, count: int, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(mixtures, probe speech): probe clip k + a window of one residual at ``snr_db``, at the level ``level_rms`` of
    the user's recordings. Windows are drawn from ``seed``; clips are as long as the shortest residual allows."""
    length = min(int(PROBE_SECONDS * SAMPLE_RATE), min(len(r) for r in residuals))
    rng = np.random.default_rng([seed, 0x6A7D])
    mixtures, speech = [], []
    for k, clip in enumerate(probe_speech(count)):
        clip = np.asarray(clip[:length], np.float64)
        residual = residuals[k % len(residuals)]
        start = int(rng.integers(0, len(residual) - length + 1))
        noise = np.asarray(residual[start : start + length], np.float64)
        p_speech, p_noise = float(np.mean(clip**2)), float(np.mean(noise**2))
        if p_noise > 1e-12:
            noise = noise * math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
        mixture = clip + noise
        gain = level_rms / (math.sqrt(float(np.mean(mixture**2))) + 1e-9)
        mixtures.append((mixture * gain).astype(np.float32))
        speech.append((clip * gain).astype(np.float32))
    return mixtures, speech


def _rms(chunks: list[np.ndarray]) -> float:
    energy = sum(float(np.sum(np.square(c, dtype=np.float64))) for c in chunks)
    return math.sqrt(energy / max(1, sum(len(c) for c in chunks)))


def _seconds(chunks: list[np.ndarray]) -> float:
    return sum(len(c) for c in chunks) / SAMPLE_RATE


@torch.no_grad()
def _outputs(model: nn.Module, clips: list[np.ndarray]) -> list[np.ndarray]:
    """``model``'s output for each clip, one clip per forward pass, where the model is."""
    model.eval()
    device = model_device(model)
    return [
        model(torch.from_numpy(np.asarray(c, np.float32))[None].to(device))[0].cpu().numpy() for c in clips
    ]


def _mean_si_sdr(outputs: list[np.ndarray], references: list[np.ndarray]) -> float:
    return float(np.mean([si_sdr(o, r) for o, r in zip(outputs, references, strict=True)]))


@dataclasses.dataclass(frozen=True)
class TeacherCheck:
    """The teacher's lead over the generic student on a user's probes, measured where the teacher is (the server in
    ``pseudo_targets`` mode) and handed to the adaptation on the device."""

    generic_score: float
    teacher_score: float
    macs: float = 0.0  # charged where the check ran

    @property
    def lead(self) -> float:
        return self.teacher_score - self.generic_score


def decide(
    cfg: AdaptConfig, generic_score: float, personalized_score: float, teacher_lead: float, macs: float
) -> GuardVerdict:
    """Adopt the fine-tuned student when the teacher's lead over the generic student is at least
    ``-guard_margin_db`` (when known) and the fine-tuned student is at most ``guard_student_margin_db`` below the
    generic one."""
    teacher_ok = math.isnan(teacher_lead) or teacher_lead >= -cfg.guard_margin_db
    student_ok = personalized_score >= generic_score - cfg.guard_student_margin_db
    decision = "adopted" if teacher_ok and student_ok else "kept_generic"
    return GuardVerdict(decision, generic_score, personalized_score, teacher_lead, macs)


def _forward_macs(model: nn.Module, seconds: float) -> float:
    """Forward MACs, 0 for a model that cannot be counted (an ONNX graph with control flow)."""
    try:
        return forward_macs(model, seconds)
    except ValueError:
        return 0.0


@dataclasses.dataclass
class Probes:
    """A user's probe mixtures, their clean probe speech and the generic student's score on them."""

    mixtures: list[np.ndarray]
    speech: list[np.ndarray]
    generic_score: float
    macs: float  # the generic student on the user's chunks (noise estimate) and on the probes

    def score(self, model: nn.Module) -> tuple[float, float]:
        """(mean SI-SDR of ``model`` on the probes, its MACs)."""
        return _mean_si_sdr(_outputs(model, self.mixtures), self.speech), _forward_macs(model, self.seconds)

    @property
    def seconds(self) -> float:
        return _seconds(self.mixtures)


@torch.no_grad()
def build_probes(cfg: AdaptConfig, generic: nn.Module, chunks: list[np.ndarray], seed: int) -> Probes:
    """Probe mixtures from the user's ``chunks`` (their noise as the generic student hears it) and ``seed``."""
    residuals, snr_db = noise_estimate(_outputs(generic, chunks), chunks)
    count = max(1, round(cfg.guard_probe_seconds / PROBE_SECONDS))
    mixtures, speech = probe_mixtures(residuals, snr_db, _rms(chunks), count, seed)
    generic_score = _mean_si_sdr(_outputs(generic, mixtures), speech)
    macs = forward_macs(generic, _seconds(chunks) + _seconds(mixtures))
    return Probes(mixtures, speech, generic_score, macs)


@torch.no_grad()
def teacher_check(
    cfg: AdaptConfig, generic: nn.Module, teacher: nn.Module, chunks: list[np.ndarray], seed: int
) -> TeacherCheck:
    """``guard=on`` where the teacher is but the adaptation is not: its lead on probes built from ``chunks``."""
    probes = build_probes(cfg, generic, chunks, seed)
    teacher_score, teacher_macs = probes.score(teacher)
    return TeacherCheck(probes.generic_score, teacher_score, probes.macs + teacher_macs)


@torch.no_grad()
def probe_verdict(
    cfg: AdaptConfig,
    generic: nn.Module,
    personalized: nn.Module,
    chunks: list[np.ndarray],
    seed: int,
    teacher: nn.Module | TeacherCheck | None = None,
) -> GuardVerdict:
    """``guard=on``: the generic and the fine-tuned student (and the teacher, a module here or a check made where
    it is) on probe mixtures built from the user's ``chunks``."""
    probes = build_probes(cfg, generic, chunks, seed)
    personalized_score, macs = probes.score(personalized)
    macs += probes.macs
    lead = math.nan
    if isinstance(teacher, TeacherCheck):
        lead = teacher.lead
    elif teacher is not None:
        teacher_score, teacher_macs = probes.score(teacher)
        lead, macs = teacher_score - probes.generic_score, macs + teacher_macs
    return decide(cfg, probes.generic_score, personalized_score, lead, macs)


@torch.no_grad()
def dnsmos_verdict(
    cfg: AdaptConfig,
    generic: nn.Module,
    personalized: nn.Module,
    chunks: list[np.ndarray],
    teacher_outputs: list[np.ndarray] | None = None,
) -> GuardVerdict:
    """``guard=dnsmos``: 10 x the mean DNSMOS OVR of both students' outputs on the user's ``chunks`` (and of the
    teacher's outputs for them, the pseudo-targets, when given)."""
    from fedpse.models.dnsmos import load_dnsmos  # an optional extra: imported only when asked for

    scorer = load_dnsmos(model_device(generic))  # loaded once per process and device
    outputs = [_outputs(generic, chunks), _outputs(personalized, chunks)]
    if teacher_outputs is not None:
        outputs.append([np.asarray(t, np.float32) for t in teacher_outputs])
    scores = [DNSMOS_SCALE * float(np.mean([r["ovr"] for r in scorer.score_many(o)])) for o in outputs]
    seconds = _seconds(chunks)
    macs = 2 * forward_macs(generic, seconds) + len(outputs) * seconds * float(scorer.macs_per_second)
    lead = scores[2] - scores[0] if len(scores) == 3 else math.nan
    return decide(cfg, scores[0], scores[1], lead, macs)


def guard_verdict(
    cfg: AdaptConfig,
    generic: nn.Module,
    personalized: nn.Module,
    chunks: list[np.ndarray],
    seed: int,
    teacher: nn.Module | TeacherCheck | None = None,
    teacher_outputs: list[np.ndarray] | None = None,
) -> GuardVerdict:
    """The guard's decision (``cfg.guard`` = on | dnsmos) on the user's unlabeled ``chunks`` (held-out ones):
    ``teacher`` for guard=on, the teacher's ``teacher_outputs`` for those chunks (pseudo-targets) for dnsmos."""
    if cfg.guard == "on":
        return probe_verdict(cfg, generic, personalized, chunks, seed, teacher)
    if cfg.guard == "dnsmos":
        return dnsmos_verdict(cfg, generic, personalized, chunks, teacher_outputs)
    raise ValueError(f"adapt.guard: expected on | dnsmos for a verdict, got {cfg.guard!r}")


def check_guard(cfg: AdaptConfig) -> None:
    """Before any work: ``guard=dnsmos`` needs the DNSMOS extra (``DnsmosUnavailable``, a ``ConfigError``, naming
    ``adapt.guard`` and the install command otherwise)."""
    if cfg.guard == "dnsmos":
        from fedpse.models.dnsmos import require_dnsmos

        require_dnsmos("adapt.guard")
