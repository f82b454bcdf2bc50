"""Music places: additive instruments playing a chord progression on a beat grid, optional drums."""

from __future__ import annotations

import math

import numpy as np

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.common import (
    BLOCK_SAMPLES,
    NOMINAL_RMS,
    NYQUIST_SAFE_HZ,
    S_MUSIC,
    S_TIMBRE,
    TWO_PI,
    block_rng,
    loguniform,
)

_SCALES = {
    "major": [0, 2, 4, 5, 7, 9, 11],
    "minor": [0, 2, 3, 5, 7, 8, 10],
    "dorian": [0, 2, 3, 5, 7, 9, 10],
    "mixolydian": [0, 2, 4, 5, 7, 9, 10],
    "pentatonic_major": [0, 2, 4, 7, 9],
    "pentatonic_minor": [0, 3, 5, 7, 10],
}
_PROGRESSIONS = [
    [0, 4, 5, 3],
    [0, 3, 4, 4],
    [0, 5, 3, 4],
    [5, 3, 0, 4],
    [0, 0, 3, 4],
    [0, 6, 5, 4],
    [1, 4, 0, 0],
]
_ROLES = ("pad", "bass", "lead", "arp")


def _draw_voice(rng: np.random.Generator, role: str, beat_s: float, bar_s: float) -> dict:
    n_partials = int(rng.integers(3, 13))
    partials_db = -rng.uniform(3, 12) * np.log2(np.arange(1, n_partials + 1)) + rng.normal(0, 3, n_partials)
    if rng.random() < 0.25:  # hollow, clarinet-like: weak even partials
        partials_db[1::2] -= 15
    shape = {
        "pad": {
            "attack_s": (0.05, 0.4),
            "decay_s": (1.0, 3.0),
            "note_s": (min(bar_s, 3.0),) * 2,
            "prob": (1, 1),
        },
        "bass": {
            "attack_s": (0.005, 0.02),
            "decay_s": (0.2, 0.8),
            "note_s": (0.5 * beat_s, 1.5),
            "prob": (0.6, 1),
        },
        "lead": {"attack_s": (0.005, 0.05), "decay_s": (0.2, 1.0), "note_s": (0.2, 1.0), "prob": (0.2, 0.6)},
        "arp": {"attack_s": (0.002, 0.01), "decay_s": (0.1, 0.4), "note_s": (0.15, 0.6), "prob": (0.7, 1)},
    }[role]
    voice = {
        "role": role,
        "octave": {"pad": 0, "bass": -12, "lead": 12, "arp": int(rng.choice([12, 24]))}[role],
        "partials_db": partials_db,
        "inharmonicity": 0.0 if rng.random() < 0.6 else loguniform(rng, 1e-4, 2e-3),
        "attack_s": loguniform(rng, *shape["attack_s"]),
        "decay_s": loguniform(rng, *shape["decay_s"]),
        "note_s": rng.uniform(*shape["note_s"]),
        "note_prob": rng.uniform(*shape["prob"]),
        "level_db": rng.uniform(-8, 0),
    }
    if role == "lead":
        voice["contour"] = {
            "periods_steps": [rng.uniform(16, 64), rng.uniform(4, 16)],
            "phases": rng.random(2),
        }
        voice["contour"] |= {
            "depths": [rng.uniform(2, 4), rng.uniform(0.5, 2)],
            "jitter": rng.uniform(0.5, 1.5),
        }
    if role == "arp":
        voice["pattern"] = [int(i) for i in rng.integers(0, 4, int(rng.choice([3, 4, 6, 8])))]
    return voice


def _hash_uniform(seed: int, stream: int, index: np.ndarray, draw: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1) from (seed, stream, index, draw): splitmix64, vectorised over index."""
    x = index.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x += np.uint64(
        (seed * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB + draw * 0xD6E8FEB86659FD93) % 2**64
    )
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


class Music(NoiseFamily):
    """Additive instruments playing a chord progression on a beat grid, optional drums."""

    name = "music"

    @staticmethod
    def draw(rng: np.random.Generator) -> dict:
        bpm = rng.uniform(60, 150)
        beats_per_bar = int(rng.choice([3, 4], p=[0.25, 0.75]))
        beat_s = 60.0 / bpm
        roles = rng.choice(_ROLES, int(rng.integers(2, 5)), replace=False)
        return {
            "bpm": bpm,
            "beats_per_bar": beats_per_bar,
            "steps_per_beat": int(rng.choice([2, 4])),
            "swing": rng.uniform(0, 0.25) if rng.random() < 0.4 else 0.0,
            "root_midi": int(rng.integers(45, 58)),
            "scale": str(rng.choice(list(_SCALES))),
            "progression": _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))],
            "voices": [_draw_voice(rng, str(role), beat_s, beat_s * beats_per_bar) for role in sorted(roles)],
            "drums": None
            if rng.random() < 0.4
            else {
                "kick_db": rng.uniform(-6, 0),
                "snare_db": rng.uniform(-10, -2),
                "hat_db": rng.uniform(-16, -6),
                "hat_prob": rng.uniform(0.3, 1.0),
                "kick_hz": loguniform(rng, 40, 70),
                "snare_hz": loguniform(rng, 1000, 4000),
            },
        }

    def __init__(self, seed: int, p: dict):
        self.seed, self.p = seed, p
        self.scale = np.asarray(_SCALES[p["scale"]])
        self.steps_per_bar = p["steps_per_beat"] * p["beats_per_bar"]
        self.step_samples = SAMPLE_RATE * 60.0 / (p["bpm"] * p["steps_per_beat"])
        self.waves: dict[tuple[int, int], np.ndarray] = {}
        self.drums = self._drum_sounds(block_rng(seed, S_TIMBRE, 99)) if p["drums"] else {}
        longest = max(
            [v["note_s"] * SAMPLE_RATE for v in p["voices"]] + [w.size for w in self.drums.values()]
        )
        self.reach_steps = int(longest / self.step_samples) + 2
        self.gain = NOMINAL_RMS / math.sqrt(self._expected_power())

    # --- what is played: stateless functions of the absolute step index -------------------------------------

    def _degree_to_midi(self, degree: np.ndarray, octave: int) -> np.ndarray:
        n = self.scale.size
        return self.p["root_midi"] + octave + 12 * (degree // n) + self.scale[degree % n]

    def _chord_root(self, steps: np.ndarray) -> np.ndarray:
        progression = np.asarray(self.p["progression"])
        return progression[(steps // self.steps_per_bar) % progression.size]

    def _notes(self, v: int, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(step, midi, velocity) of voice ``v``'s notes starting on ``steps``."""
        voice = self.p["voices"][v]
        stream, role = S_MUSIC + 8 * v, voice["role"]
        chance = _hash_uniform(self.seed, stream, steps, 0)
        velocity = 10.0 ** ((_hash_uniform(self.seed, stream, steps, 1) - 0.5) * 6 / 20)  # +-3 dB
        root = self._chord_root(steps)
        if role == "pad":
            on = steps % self.steps_per_bar == 0
            s, r, vel = steps[on], root[on], velocity[on]
            chord = np.stack([r, r + 2, r + 4], axis=1)
            return (
                np.repeat(s, 3),
                self._degree_to_midi(chord.ravel(), voice["octave"]),
                np.repeat(vel, 3) / 1.7,
            )
        if role == "bass":
            on = (steps % self.p["steps_per_beat"] == 0) & (chance < voice["note_prob"])
            fifth = 4 * (_hash_uniform(self.seed, stream, steps, 2) < 0.25)
            degree = root + fifth
        elif role == "lead":
            on = chance < voice["note_prob"]
            c = voice["contour"]
            contour = sum(
                depth * np.sin(TWO_PI * (steps / period + phase))
                for depth, period, phase in zip(c["depths"], c["periods_steps"], c["phases"], strict=True)
            )
            jitter = (_hash_uniform(self.seed, stream, steps, 2) - 0.5) * 2 * c["jitter"]
            degree = np.rint(contour + jitter).astype(np.int64)
        else:  # arp: chord tones in a repeating pattern (3 = root an octave up)
            on = chance < voice["note_prob"]
            tone = np.asarray(voice["pattern"])[steps % len(voice["pattern"])]
            degree = root + np.where(tone == 3, self.scale.size, 2 * tone)
        return steps[on], self._degree_to_midi(degree[on], voice["octave"]), velocity[on]

    def _hits(self, steps: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        drums = self.p["drums"]
        on_beat = steps % self.p["steps_per_beat"] == 0
        beat = (steps % self.steps_per_bar) // self.p["steps_per_beat"]
        velocity = 10.0 ** ((_hash_uniform(self.seed, S_MUSIC - 1, steps, 0) - 0.5) * 4 / 20)
        hat = _hash_uniform(self.seed, S_MUSIC - 1, steps, 1) < drums["hat_prob"]
        return [
            (name, steps[mask], velocity[mask])
            for name, mask in (
                ("kick", on_beat & (beat % 2 == 0)),
                ("snare", on_beat & (beat % 2 == 1)),
                ("hat", hat),
            )
        ]

    def _onset(self, steps: np.ndarray) -> np.ndarray:
        swing = self.p["swing"] * (steps % 2)
        return np.rint((steps + swing) * self.step_samples).astype(np.int64)

    # --- how it sounds ---------------------------------------------------------------------------------------

    def _partials(self, v: int, midi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        voice = self.p["voices"][v]
        amps = 10.0 ** (np.asarray(voice["partials_db"]) / 20.0)
        k = np.arange(1, amps.size + 1)
        hz = 440.0 * 2.0 ** ((midi - 69) / 12) * k * np.sqrt(1.0 + voice["inharmonicity"] * k**2)
        decays = voice["decay_s"] / (1.0 + 0.3 * (k - 1))  # upper partials die away first
        audible = hz < NYQUIST_SAFE_HZ
        return hz[audible], amps[audible], decays[audible]

    def _envelope(self, v: int, t: np.ndarray, decays: np.ndarray) -> np.ndarray:
        voice = self.p["voices"][v]
        release = np.clip((voice["note_s"] - t) / 0.04, 0.0, 1.0)  # 40 ms fade at the note's end
        return (1.0 - np.exp(-t / voice["attack_s"])) * release * np.exp(-t[None, :] / decays[:, None])

    def _wave(self, v: int, midi: int) -> np.ndarray:
        """One note of voice ``v`` (cached per pitch): decaying additive partials with fixed phases."""
        if (v, midi) not in self.waves:
            hz, amps, decays = self._partials(v, midi)
            t = np.arange(int(self.p["voices"][v]["note_s"] * SAMPLE_RATE)) / SAMPLE_RATE
            phases = block_rng(self.seed, S_TIMBRE, v).random(len(self.p["voices"][v]["partials_db"]))
            partials = np.sin(TWO_PI * (hz[:, None] * t + phases[: hz.size, None]))
            level = 10.0 ** (self.p["voices"][v]["level_db"] / 20.0)
            self.waves[v, midi] = (level * amps @ (partials * self._envelope(v, t, decays))).astype(
                np.float32
            )
        return self.waves[v, midi]

    def _note_energy(self, v: int, midi: int) -> float:
        """Energy of ``_wave(v, midi)`` from a 1 kHz envelope grid, assuming incoherent partials (cheap)."""
        hz, amps, decays = self._partials(v, midi)
        t = np.arange(0, self.p["voices"][v]["note_s"], 1e-3)
        level = 10.0 ** (self.p["voices"][v]["level_db"] / 20.0)
        envelope_energy = np.sum(self._envelope(v, t, decays) ** 2, axis=1) * (1e-3 * SAMPLE_RATE)
        return float(level**2 * np.sum(amps**2 / 2 * envelope_energy))

    def _drum_sounds(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        d = self.p["drums"]
        t = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE
        sweep = d["kick_hz"] * t + 60.0 * 0.03 * (1.0 - np.exp(-t / 0.03))  # pitch falls by 60 Hz in ~30 ms
        kick = np.sin(TWO_PI * sweep) * np.exp(-t / 0.12)
        f = np.maximum(np.fft.rfftfreq(t.size, 1.0 / SAMPLE_RATE), 1.0)
        band = np.exp(-0.5 * np.log2(f / d["snare_hz"]) ** 2)
        snare = np.fft.irfft(np.fft.rfft(rng.standard_normal(t.size)) * band, t.size) * np.exp(-t / 0.06)
        snare = snare / np.max(np.abs(snare)) + 0.5 * np.sin(TWO_PI * 185 * t) * np.exp(-t / 0.04)
        hat = np.fft.irfft(np.fft.rfft(rng.standard_normal(t.size)) * (f > 5000), t.size) * np.exp(-t / 0.02)
        sounds = {"kick": kick, "snare": snare, "hat": hat[: t.size // 3]}
        levels = {"kick": d["kick_db"], "snare": d["snare_db"], "hat": d["hat_db"]}
        return {
            name: (10.0 ** (levels[name] / 20.0) * 0.5 * w / np.max(np.abs(w))).astype(np.float32)
            for name, w in sounds.items()
        }

    def _expected_power(self, steps: int = 4096) -> float:
        """Mean power over a stretch of the (infinite) score, counting each note's energy once."""
        index = np.arange(-steps, 0)
        energy = 0.0
        for v in range(len(self.p["voices"])):
            _, midi, velocity = self._notes(v, index)
            energy += sum(
                float(np.sum(velocity[midi == m] ** 2)) * self._note_energy(v, m) for m in np.unique(midi)
            )
        if self.drums:
            for name, _, velocity in self._hits(index):
                energy += float(np.sum(velocity**2) * np.sum(self.drums[name].astype(np.float64) ** 2))
        return max(energy / (steps * self.step_samples), 1e-12)

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        start, end = k0 * BLOCK_SAMPLES, k1 * BLOCK_SAMPLES
        out = np.zeros(end - start, dtype=np.float32)
        steps = np.arange(
            int(start // self.step_samples) - self.reach_steps, int(end // self.step_samples) + 2
        )
        for v in range(len(self.p["voices"])):
            note_steps, midi, velocity = self._notes(v, steps)
            for onset, m, vel in zip(self._onset(note_steps), midi, velocity, strict=True):
                self._place(out, start, int(onset), self._wave(v, int(m)), vel)
        if self.drums:
            for name, hit_steps, velocity in self._hits(steps):
                for onset, vel in zip(self._onset(hit_steps), velocity, strict=True):
                    self._place(out, start, int(onset), self.drums[name], vel)
        return out * np.float32(self.gain)

    @staticmethod
    def _place(out: np.ndarray, start: int, onset: int, wave: np.ndarray, scale: float) -> None:
        lo = onset - start
        a, b = max(lo, 0), min(lo + wave.size, out.size)
        if a < b:
            out[a:b] += np.float32(scale) * wave[a - lo : b - lo]
