"""Text-to-speech voices for the generated speech world: libespeak-ng (from the espeakng-loader wheel) via ctypes.

A ``Voice`` is a point in a continuous, seeded space: a base espeak variant (timbre: formant heights and widths,
voicing, source model) plus sampled pitch, pitch range, formant scaling, per-formant shifts, breathiness, flutter,
roughness, spectral tilt, accent and speaking rate. Formant scaling and breathiness are not API parameters, so each
voice is written as an espeak-ng *voice variant file* (``formant``, ``pitch``, ``breath``, ``tone``... lines; see
espeak-ng ``docs/voices.md``) and selected by name, e.g. ``gmw/en-us+fp/v1a2b3c4d5e6f``. The files live in an
overlay of the wheel's ``espeak-ng-data`` (symlinks plus our own ``voices/!v/fp/`` directory) under the system temp
dir, one per user and espeak build, shared by all processes: files are named by a hash of their content and
written atomically, so workers never conflict. The wheel itself is never modified.

Determinism: espeak-ng keeps synthesis state in C statics (the flutter phase, the roughness cycle counter) and its
Klatt source draws from libc ``rand()``. Each ``render`` therefore loads a private copy of the library afresh,
seeds both random generators from the voice and the text, synthesises, and unloads it again: the same voice and
text give bit-identical audio in any order, in any process. Reloading costs ~3 ms per utterance.

Output level: ``render`` returns float32 mono 16 kHz audio RMS-normalised over its active (non-silent) frames to
``TARGET_ACTIVE_RMS`` (-26 dBFS), with peaks kept below ``PEAK_LIMIT``, and exactly ``EDGE_SILENCE_SECONDS`` of
silence before and after the speech.
"""

from __future__ import annotations

import _ctypes
import ctypes
import dataclasses
import hashlib
import importlib.metadata
import locale
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import espeakng_loader
import numpy as np
from scipy.signal import find_peaks

from fedpse.audio.io import SAMPLE_RATE, resample
from fedpse.world.text import sentence, sentences

TARGET_ACTIVE_RMS = 0.05  # -26 dBFS over active speech frames
PEAK_LIMIT = 0.95
EDGE_SILENCE_SECONDS = 0.05

# Base variants (files in espeak-ng-data/voices/!v) that read as distinct human voices rather than robots, whispers
# or effects. Their own pitch, echo, flutter, roughness and breath lines are replaced by the sampled values. All
# but three use espeak's harmonic synthesiser; adam, benjamin and david use its Klatt-style "klatt 6" source, which
# honours formants, pitch, speed and breathiness but ignores flutter, roughness and brightness.
MALE_BASES = (
    "m1", "m2", "m3", "m4", "m6", "m7", "adam", "benjamin", "david", "robert", "Gene", "john", "quincy", "Mike",
)  # fmt: skip
FEMALE_BASES = (
    "f1", "f2", "f3", "f4", "f5", "linda", "belinda", "aunty", "Annie", "Andrea", "Alicia",
)  # fmt: skip
# espeak-ng English accents (files in espeak-ng-data/lang/gmw) and how often a sampled voice uses each.
ACCENTS = {
    "en-US": 0.40,
    "en": 0.20,
    "en-GB-x-rp": 0.10,
    "en-GB-scotland": 0.07,
    "en-GB-x-gbclan": 0.06,
    "en-GB-x-gbcwmd": 0.06,
    "en-US-nyc": 0.06,
    "en-029": 0.05,
}

_DROPPED_BASE_KEYS = {
    "language", "name", "gender", "maintainer", "status", "pitch", "echo", "flutter", "roughness", "breath",
    "breathw", "formant", "tone", "voicing", "speed", "variants",
}  # fmt: skip
_DEFAULT_TONE = ((600, 170), (1200, 135), (2000, 110))
_VARIANT_DIR = "fp"  # generated variants live in voices/!v/fp/ (short: espeak keeps names in 40-byte buffers)


class VoiceError(ValueError):
    """A voice spec or voice file that fedpse cannot use; the message says which field and what is expected."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker. Frequencies are in Hz, scales are multiplicative (1.0 = the base variant's value)."""

    voice_id: str
    base: str  # espeak variant file in voices/!v supplying the timbre, e.g. "m3", "f2", "adam"
    formant_scale: float  # multiplies every formant frequency of the base (vocal-tract length), ~0.88-1.12
    pitch: int  # espeak base pitch, Hz: floor of the intonation contour (median F0 ~ pitch + 0.65 * range)
    pitch_range: int  # Hz that intonation peaks rise above ``pitch``
    speed_wpm: int  # speaking rate, words per minute
    breathiness: float  # 0 = modal voice, 1 = very breathy (formant-shaped noise, weaker voicing)
    formant_shifts: tuple[float, float, float] = (1.0, 1.0, 1.0)  # extra F1, F2, F3 multipliers (vowel space)
    flutter: int = 2  # espeak flutter: slow random pitch wavering (0-12; 2 is espeak's default)
    roughness: int = 0  # espeak roughness 0-7: alternate glottal cycles weakened (creak)
    brightness_db_per_octave: float = 0.0  # spectral tilt of voiced sounds above 600 Hz
    accent: str = "en-US"  # espeak-ng English language file in lang/gmw

    def __post_init__(self) -> None:
        # accept values as they come back from JSON/YAML (2.0 for 2, lists for tuples), reject anything else
        for field in ("pitch", "pitch_range", "speed_wpm", "flutter", "roughness"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise VoiceError(f"voice {self.voice_id!r}: {field}={value!r}; expected an integer")
            object.__setattr__(self, field, int(value))
        for field in ("formant_scale", "breathiness", "brightness_db_per_octave"):
            object.__setattr__(self, field, float(getattr(self, field)))
        object.__setattr__(self, "formant_shifts", tuple(float(x) for x in self.formant_shifts))
        _validate(self)

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["formant_shifts"] = list(self.formant_shifts)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Voice:
        """Inverse of ``to_dict``; unknown or missing keys raise ``VoiceError`` naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise VoiceError(
                f"unknown voice field(s) {sorted(unknown)}; expected a subset of {sorted(fields)}"
            )
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = required - set(data)
        if missing:
            raise VoiceError(f"voice spec is missing field(s) {sorted(missing)}")
        return cls(**data)


def _validate(voice: Voice) -> None:
    def bad(field: str, expected: str) -> VoiceError:
        return VoiceError(f"voice {voice.voice_id!r}: {field}={getattr(voice, field)!r}; expected {expected}")

    if not voice.voice_id or any(c.isspace() for c in voice.voice_id):
        raise bad("voice_id", "a non-empty id without whitespace")
    if not (0.6 <= voice.formant_scale <= 1.5):
        raise bad("formant_scale", "a value in [0.6, 1.5]")
    if not (40 <= voice.pitch <= 400):
        raise bad("pitch", "Hz in [40, 400]")
    if not (0 <= voice.pitch_range <= 300):
        raise bad("pitch_range", "Hz in [0, 300]")
    if not (80 <= voice.speed_wpm <= 450):
        raise bad("speed_wpm", "words per minute in [80, 450]")
    if not (0.0 <= voice.breathiness <= 1.0):
        raise bad("breathiness", "a value in [0, 1]")
    if len(voice.formant_shifts) != 3 or not all(0.7 <= s <= 1.3 for s in voice.formant_shifts):
        raise bad("formant_shifts", "three multipliers in [0.7, 1.3]")
    if not (0 <= voice.flutter <= 30):
        raise bad("flutter", "an integer in [0, 30]")
    if not (0 <= voice.roughness <= 7):
        raise bad("roughness", "an integer in [0, 7]")
    if not (-6.0 <= voice.brightness_db_per_octave <= 6.0):
        raise bad("brightness_db_per_octave", "dB per octave in [-6, 6]")
    if voice.accent not in ACCENTS:
        raise bad("accent", f"one of {sorted(ACCENTS)}")
    known = voice.base in MALE_BASES + FEMALE_BASES
    if not known and ("/" in voice.base or not _base_variant_path(voice.base).is_file()):
        raise bad("base", f"the name of a variant file in {_base_variant_path('m1').parent}")


# --- sampling the voice space -----------------------------------------------------------------------------------


def _sample_one(rng: np.random.Generator, voice_id: str) -> Voice:
    female = rng.random() < 0.5
    bases = FEMALE_BASES if female else MALE_BASES
    base = str(bases[int(rng.integers(len(bases)))])
    median_pitch = 160.0 if female else 90.0  # median F0 comes out ~205 / ~115 Hz
    log_pitch_z = float(np.clip(rng.normal(), -2.2, 2.2))
    pitch = median_pitch * math.exp(0.14 * log_pitch_z)
    accents = list(ACCENTS)
    weights = np.array([ACCENTS[a] for a in accents])
    return Voice(
        voice_id=voice_id,
        base=base,
        # higher-pitched speakers tend to have slightly shorter vocal tracts
        formant_scale=round(
            float(np.clip(1.0 + 0.045 * (0.8 * rng.normal() + 0.3 * log_pitch_z), 0.88, 1.12)), 3
        ),
        pitch=int(round(pitch)),
        pitch_range=int(round(pitch * rng.uniform(0.25, 0.65))),
        speed_wpm=int(round(np.clip(rng.normal(165.0, 18.0), 125, 215))),
        breathiness=round(float(rng.beta(2.5, 4.0) if female else rng.beta(1.8, 5.0)), 3),
        formant_shifts=tuple(round(float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08)), 3) for _ in range(3)),
        flutter=int(rng.choice([0, 1, 2, 3, 4, 6, 8], p=[0.1, 0.2, 0.25, 0.2, 0.1, 0.1, 0.05])),
        roughness=int(rng.choice([0, 1, 2, 3, 4, 5], p=[0.3, 0.2, 0.2, 0.15, 0.1, 0.05])),
        brightness_db_per_octave=round(float(np.clip(rng.normal(0.0, 1.5), -3.5, 3.5)), 2),
        accent=str(accents[int(rng.choice(len(accents), p=weights / weights.sum()))]),
    )


def _voice_coordinates(voice: Voice) -> np.ndarray:
    """Rough perceptual coordinates used to spread sampled voices apart (unit ~ one 'clearly different' step)."""
    return np.array(
        [
            math.log(voice.pitch) / 0.12,
            (voice.formant_scale - 1.0) / 0.04,
            (voice.speed_wpm - 165.0) / 25.0,
            voice.breathiness / 0.3,
            voice.brightness_db_per_octave / 2.0,
        ]
    )


def _nearest_gap(voice: Voice, coords: np.ndarray, bases: np.ndarray, accents: np.ndarray) -> float:
    """Distance from ``voice`` to the nearest chosen voice; sharing a base or an accent counts as closer."""
    gaps = np.linalg.norm(coords - _voice_coordinates(voice), axis=1)
    return float(np.min(gaps - 1.0 * (bases == voice.base) - 0.5 * (accents == voice.accent)))


def sample_voices(n: int, rng: np.random.Generator, prefix: str, candidates: int = 4) -> list[Voice]:
    """``n`` voices with ids ``f"{prefix}-{i:03d}"``, drawn from ``rng``.

    Each voice is the best of ``candidates`` random draws: the one farthest from the voices already chosen (in
    ``_voice_coordinates``, with a same-base or same-accent penalty), so a small pool has no near-duplicates;
    ``candidates=1`` draws plainly from the population.
    """
    if n < 0:
        raise ValueError(f"n={n}; expected a non-negative number of voices")
    if not prefix or any(c.isspace() for c in prefix):
        raise ValueError(f"prefix={prefix!r}; expected a non-empty prefix without whitespace")
    chosen: list[Voice] = []
    coords = np.zeros((n, 5))
    for i in range(n):
        draws = [_sample_one(rng, f"{prefix}-{i:03d}") for _ in range(max(1, candidates))]
        if chosen:
            bases, accents = np.array([v.base for v in chosen]), np.array([v.accent for v in chosen])
            gaps = [_nearest_gap(v, coords[:i], bases, accents) for v in draws]
            draws = [draws[int(np.argmax(gaps))]]
        chosen.append(draws[0])
        coords[i] = _voice_coordinates(draws[0])
    return chosen


# --- espeak voice variant files ---------------------------------------------------------------------------------


def _base_variant_path(base: str) -> Path:
    return Path(espeakng_loader.get_data_path()) / "voices" / "!v" / base


@cache
def _parse_base(
    base: str,
) -> tuple[dict[int, tuple[int, int, int, int]], tuple[tuple[int, int], ...], int, tuple]:
    """(formants {n: (freq%, height%, width%, freq_add)}, tone points, voicing%, other lines kept verbatim)."""
    path = _base_variant_path(base)
    if not path.is_file():
        raise VoiceError(f"espeak base variant {base!r} not found at {path}")
    formants: dict[int, tuple[int, int, int, int]] = {}
    tone: tuple[tuple[int, int], ...] = _DEFAULT_TONE
    voicing = 100
    kept: list[str] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("//")[0].strip()
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        numbers = [int(v) for v in values if v.lstrip("-").isdigit()]
        if key == "formant" and len(numbers) >= 2:
            padded = numbers[1:] + [100, 100, 0][len(numbers) - 2 :]
            formants[numbers[0]] = (padded[0], padded[1], padded[2], padded[3])
        elif key == "tone" and len(numbers) >= 2:
            tone = tuple((numbers[i], numbers[i + 1]) for i in range(0, len(numbers) - 1, 2))[:5]
        elif key == "voicing" and numbers:
            voicing = numbers[0]
        elif key not in _DROPPED_BASE_KEYS:
            kept.append(line)
    return formants, tone, voicing, tuple(kept)


def variant_file_text(voice: Voice) -> str:
    """The espeak-ng voice variant file (attribute lines: pitch, formant, breath, tone...) realising ``voice``."""
    formants, tone, voicing, kept = _parse_base(voice.base)
    lines = [f"pitch {voice.pitch} {voice.pitch + voice.pitch_range}"]
    for number in range(9):
        freq, height, width, freq_add = formants.get(number, (100, 100, 100, 0))
        scale = voice.formant_scale * (voice.formant_shifts[number - 1] if 1 <= number <= 3 else 1.0)
        if freq > 0:  # a zero frequency switches the formant off in some bases; keep it off
            freq = max(1, int(round(freq * scale)))
        lines.append(f"formant {number} {freq} {height} {width} {int(round(freq_add * voice.formant_scale))}")
    lines.append(f"flutter {voice.flutter}")
    lines.append(f"roughness {voice.roughness}")
    b = voice.breathiness
    if b > 0:
        # noise on formants 1-8; strongest on F2-F5 as in espeak's breathy female variants
        lines.append("breath " + " ".join(str(int(round(b * k))) for k in (6, 18, 22, 22, 20, 16, 8, 8)))
        lines.append("breathw 150 150 200 200 400 400 600 600")
    lines.append(f"voicing {max(10, int(round(voicing * (1.0 - 0.35 * b))))}")
    lines.append(
        "tone " + " ".join(f"{f} {a}" for f, a in _tilted_tone(tone, voice.brightness_db_per_octave))
    )
    lines.extend(kept)
    return "\n".join(lines) + "\n"


def _tilted_tone(tone: tuple[tuple[int, int], ...], db_per_octave: float) -> list[tuple[int, int]]:
    points = list(tone)
    if len(points) < 5 and points[-1][0] < 4000:
        points.append((4000, points[-1][1]))
    out = []
    for freq, amp in points:
        gain_db = db_per_octave * math.log2(max(freq, 600) / 600.0)
        out.append((freq, int(np.clip(round(amp * 10 ** (gain_db / 20.0)), 1, 255))))
    return out


# --- the private espeak-ng-data overlay -------------------------------------------------------------------------


def _cache_key() -> str:
    lib = Path(espeakng_loader.get_library_path())
    data = Path(espeakng_loader.get_data_path()).resolve()
    stat = lib.stat()
    version = importlib.metadata.version("espeakng-loader")
    layout = 2  # bump when _build_overlay changes
    key = f"{layout}|{version}|{data}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _build_overlay(target: Path) -> None:
    """espeak-ng-data made of symlinks into the wheel, with real voices/ and voices/!v/ dirs we may write into."""
    source = Path(espeakng_loader.get_data_path()).resolve()
    data = target / "espeak-ng-data"
    variants = data / "voices" / "!v"
    (variants / _VARIANT_DIR).mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name not in ("voices", "lang"):
            (data / entry.name).symlink_to(entry)
    # espeak lower-cases the voice name before opening lang/<name>, so "gmw/en-GB-scotland" needs a
    # lower-case alias; without one espeak falls back to scanning every voice file
    (data / "lang" / "gmw").mkdir(parents=True)
    for entry in (source / "lang").iterdir():
        if entry.name != "gmw":
            (data / "lang" / entry.name).symlink_to(entry)
    for entry in (source / "lang" / "gmw").iterdir():
        (data / "lang" / "gmw" / entry.name).symlink_to(entry)
        if entry.name.lower() != entry.name:
            (data / "lang" / "gmw" / entry.name.lower()).symlink_to(entry)
    for entry in (source / "voices").iterdir():
        if entry.name != "!v":
            (data / "voices" / entry.name).symlink_to(entry)
    for entry in (source / "voices" / "!v").iterdir():
        (variants / entry.name).symlink_to(entry)
    # a private copy of the library: loading and unloading it never disturbs another user of libespeak-ng
    shutil.copyfile(espeakng_loader.get_library_path(), target / "libespeak-ng-fedpse.so")


def _overlay_dir() -> Path:
    """Per-user, content-keyed overlay under the system temp dir, created once atomically and shared by workers."""
    root = Path(os.environ.get("FEDPSE_ESPEAK_CACHE") or tempfile.gettempdir())
    target = root / f"fedpse-espeak-{os.getuid()}" / _cache_key()
    if (target / "espeak-ng-data" / "voices" / "!v" / _VARIANT_DIR).is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _build_overlay(staging)
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (target / "espeak-ng-data" / "voices" / "!v" / _VARIANT_DIR).is_dir():
        raise RuntimeError(
            f"espeak-ng overlay {target} is incomplete (partly cleaned up?); delete it and retry"
        )
    return target


# --- the engine -------------------------------------------------------------------------------------------------

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_ESPEAK_RATE = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: IPA as UTF-8 ...
_PHONEMES_TIE = 0x80  # ... with bits 8-23 joining the letters of a multi-letter phoneme
_PATH_HOME_MAX = 150  # espeak-ng keeps its data path in a 160-byte buffer
_VOICE_NAME_MAX = 40  # ... and the selected "language+variant" name in a 40-byte one


class Synthesizer:
    """The process's espeak-ng engine. Thread-safe (one render at a time); safe in forked and spawned workers.

    espeak-ng is not re-entrant, so renders are serialised by a lock; the library is loaded fresh for every
    render (see the module docstring), so a forked worker inherits no half-used engine state.
    """

    def __init__(self) -> None:
        self.home = _overlay_dir()
        self.data_dir = self.home / "espeak-ng-data"
        if len(str(self.data_dir)) + 40 > _PATH_HOME_MAX:
            raise RuntimeError(
                f"espeak-ng data path {self.data_dir} is too long for libespeak-ng; "
                "set FEDPSE_ESPEAK_CACHE to a shorter directory"
            )
        self.library_path = str(self.home / "libespeak-ng-fedpse.so")
        try:  # a temp dir mounted noexec cannot hold the private copy: share the wheel's library instead
            _ctypes.dlclose(ctypes.CDLL(self.library_path)._handle)
        except OSError:
            self.library_path = espeakng_loader.get_library_path()
        self.sample_rate_native = 22050
        self._lock = threading.Lock()

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def variant_name(self, voice: Voice) -> str:
        """Write the voice's variant file if it is not there yet; return its name relative to voices/!v."""
        text = variant_file_text(voice)
        name = "v" + hashlib.sha1(text.encode()).hexdigest()[:12]
        path = self.data_dir / "voices" / "!v" / _VARIANT_DIR / name
        # checked on every render: espeak silently falls back to its default voice when a variant file is missing
        if not path.is_file():
            if not path.parent.is_dir():
                _overlay_dir()  # a temp-dir cleaner removed the overlay: rebuild it at the same path
            staging = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}")
            # no "language" line: espeak's voice listing then ignores these files
            staging.write_text(text, encoding="utf-8")
            os.replace(staging, path)
        return f"{_VARIANT_DIR}/{name}"

    def render_native(self, voice: Voice, text: str) -> np.ndarray:
        """Raw espeak-ng output for ``text``: int16 samples at ``self.sample_rate_native`` (22050 Hz)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text={text!r}; expected a non-empty string to speak")
        text = text.strip()
        variant = self.variant_name(voice)
        voice_name = f"gmw/{voice.accent.lower()}+{variant}"
        if len(voice_name) >= _VOICE_NAME_MAX:
            raise VoiceError(f"espeak voice name {voice_name!r} is longer than {_VOICE_NAME_MAX - 1} bytes")
        seed = int.from_bytes(
            hashlib.sha256(f"{voice_name}|{voice.speed_wpm}|{text}".encode()).digest()[:4], "big"
        )
        with self._lock:
            return self._synthesize(voice_name, voice.speed_wpm, text, seed & 0x7FFFFFFF)

    def _synthesize(self, voice_name: str, speed_wpm: int, text: str, seed: int) -> np.ndarray:
        chunks: list[bytes] = []

        def collect(wav, n_samples, _events):
            if wav and n_samples > 0:
                chunks.append(ctypes.string_at(wav, 2 * n_samples))
            return 0

        callback = _SYNTH_CALLBACK(collect)
        saved_locale = locale.setlocale(locale.LC_CTYPE)
        lib = ctypes.CDLL(self.library_path)
        initialised = False
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
            lib.espeak_SetSynthCallback.restype = None
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                ctypes.c_void_p, ctypes.c_void_p,
            ]  # fmt: skip
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_dir).encode(), _INITIALIZE_DONT_EXIT
            )
            if rate <= 0:
                raise RuntimeError(f"libespeak-ng failed to initialise with data at {self.data_dir}")
            initialised = True
            self.sample_rate_native = rate
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(voice_name.encode()) != 0:
                raise VoiceError(f"espeak-ng could not load voice {voice_name!r} from {self.data_dir}")
            lib.espeak_SetParameter(_ESPEAK_RATE, int(speed_wpm), 0)
            lib.espeak_ng_SetRandSeed(seed)
            _libc().srand(ctypes.c_uint(seed))  # the Klatt source draws its noise from libc rand()
            encoded = text.encode("utf-8")
            status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for text {text[:40]!r}")
        finally:
            if initialised:
                lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)
            locale.setlocale(locale.LC_CTYPE, saved_locale)
        return np.frombuffer(b"".join(chunks), dtype=np.int16)

    def phonemes(self, text: str, language: str = "en-us", tie: str = "") -> list[str]:
        """espeak-ng's IPA for ``text`` in ``language`` (a file in lang/gmw), one string per clause, punctuation
        dropped; ``tie`` (one character) joins the letters of multi-letter phonemes, e.g. ``a^ɪ``. The neural
        voices (``fedpse.world.neural_voices``) speak phonemes, not text."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text={text!r}; expected a non-empty string to phonemize")
        mode = _PHONEMES_IPA | (_PHONEMES_TIE | (ord(tie) << 8) if tie else 0)
        encoded = text.strip().encode("utf-8")
        with self._lock:
            saved_locale = locale.setlocale(locale.LC_CTYPE)
            lib = ctypes.CDLL(self.library_path)
            initialised = False
            try:
                lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
                lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
                lib.espeak_TextToPhonemes.argtypes = [
                    ctypes.POINTER(ctypes.c_char_p),
                    ctypes.c_int,
                    ctypes.c_int,
                ]
                lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
                if (
                    lib.espeak_Initialize(
                        _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_dir).encode(), _INITIALIZE_DONT_EXIT
                    )
                    <= 0
                ):
                    raise RuntimeError(f"libespeak-ng failed to initialise with data at {self.data_dir}")
                initialised = True
                if lib.espeak_SetVoiceByName(f"gmw/{language.lower()}".encode()) != 0:
                    raise VoiceError(
                        f"espeak-ng has no language {language!r} in {self.data_dir / 'lang' / 'gmw'}"
                    )
                pointer = ctypes.c_char_p(encoded)  # espeak advances it clause by clause, to NULL at the end
                clauses = []
                while pointer.value:
                    out = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, mode)
                    clauses.append(out.decode("utf-8").strip() if out else "")
            finally:
                if initialised:
                    lib.espeak_Terminate()
                _ctypes.dlclose(lib._handle)
                locale.setlocale(locale.LC_CTYPE, saved_locale)
        return [c for c in clauses if c]

    def render(self, voice: Voice, text: str) -> np.ndarray:
        """Speak ``text`` with ``voice``: float32 mono at 16 kHz, RMS-normalised, 50 ms silence at each end."""
        native = self.render_native(voice, text)
        if native.size == 0:
            raise RuntimeError(f"espeak-ng produced no audio for {text[:40]!r} with voice {voice.voice_id!r}")
        audio = resample(native.astype(np.float32) / 32768.0, self.sample_rate_native, SAMPLE_RATE)
        return _normalise(_trim(audio, SAMPLE_RATE))


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.srand.argtypes = [ctypes.c_uint]
    return libc


def _frame_db(audio: np.ndarray, frame: int) -> np.ndarray:
    n = len(audio) // frame
    power = np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)
    return 10.0 * np.log10(power + 1e-12)


def _trim(audio: np.ndarray, rate: int, floor_db: float = 50.0) -> np.ndarray:
    """Cut leading/trailing silence (frames > ``floor_db`` below the loudest) and pad to exactly 50 ms each side."""
    frame = rate // 100
    level = _frame_db(audio, frame)
    active = np.flatnonzero(level > level.max() - floor_db)
    start, stop = active[0] * frame, min(len(audio), (active[-1] + 1) * frame)
    edge = np.zeros(int(round(EDGE_SILENCE_SECONDS * rate)), dtype=np.float32)
    return np.concatenate([edge, audio[start:stop], edge]).astype(np.float32)


def _normalise(audio: np.ndarray) -> np.ndarray:
    frame = SAMPLE_RATE // 100
    level = _frame_db(audio, frame)
    active = level > level.max() - 40.0
    frames = audio[: len(level) * frame].reshape(len(level), frame)[active]
    rms = float(np.sqrt(np.mean(frames.astype(np.float64) ** 2)))
    gain = TARGET_ACTIVE_RMS / max(rms, 1e-9)
    gain = min(gain, PEAK_LIMIT / max(float(np.max(np.abs(audio))), 1e-9))
    return (audio * gain).astype(np.float32)


_SYNTHESIZER: Synthesizer | None = None
_SYNTHESIZER_PID: int | None = None
_SYNTHESIZER_LOCK = threading.Lock()


def get_synthesizer() -> Synthesizer:
    """The process-wide ``Synthesizer``, created on first use (and again in a forked child)."""
    global _SYNTHESIZER, _SYNTHESIZER_PID
    with _SYNTHESIZER_LOCK:
        if _SYNTHESIZER is None or _SYNTHESIZER_PID != os.getpid():
            _SYNTHESIZER = Synthesizer()
            _SYNTHESIZER_PID = os.getpid()
        return _SYNTHESIZER


def _after_fork_in_child() -> None:
    global _SYNTHESIZER_LOCK
    _SYNTHESIZER_LOCK = threading.Lock()  # a parent thread may have held it at fork time
    if _SYNTHESIZER is not None:
        _SYNTHESIZER._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def render_utterance(voice: Voice, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A grammar sentence drawn from ``rng`` and ``voice`` speaking it (16 kHz float32)."""
    text = sentence(rng)
    return text, get_synthesizer().render(voice, text)


# --- how distinct are the voices? -------------------------------------------------------------------------------

STATISTICS = (
    "f0_median_hz",
    "f0_spread_semitones",
    "aperiodicity",
    "spectral_centroid_hz",
    "f1_hz",
    "f2_hz",
    "f3_hz",
    "ltas_db_0_500",
    "ltas_db_500_1000",
    "ltas_db_1000_2000",
    "ltas_db_2000_4000",
    "ltas_db_4000_8000",
    "syllable_rate_hz",
)
_LTAS_BANDS = ((0, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000))


def _frames(audio: np.ndarray, length: int, hop: int) -> np.ndarray:
    if len(audio) < length:
        audio = np.pad(audio, (0, length - len(audio)))
    n = 1 + (len(audio) - length) // hop
    return np.lib.stride_tricks.as_strided(
        audio, shape=(n, length), strides=(audio.strides[0] * hop, audio.strides[0])
    ).astype(np.float64)


def _yin(audio: np.ndarray, rate: int = SAMPLE_RATE, fmin: float = 55.0, fmax: float = 420.0):
    """Plain YIN on 25 ms frames every 10 ms: (F0 Hz or NaN, CMNDF dip depth, voiced mask, frame level dB)."""
    window, hop = int(0.025 * rate), rate // 100
    tau_min, tau_max = int(rate / fmax), int(rate / fmin)
    frames = _frames(audio, window + tau_max + 1, hop)
    n_fft = 1 << int(np.ceil(np.log2(2 * (window + tau_max + 1))))
    spec_full = np.fft.rfft(frames, n_fft)
    spec_head = np.fft.rfft(frames[:, :window], n_fft)
    corr = np.fft.irfft(np.conj(spec_head) * spec_full, n_fft)[:, : tau_max + 2]
    cum = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
    taus = np.arange(tau_max + 2)
    energy_shift = cum[:, taus + window] - cum[:, taus]
    diff = energy_shift[:, :1] + energy_shift - 2.0 * corr
    running = np.cumsum(diff[:, 1:], axis=1) / np.arange(1, tau_max + 2)
    cmndf = np.ones_like(diff)
    cmndf[:, 1:] = diff[:, 1:] / np.maximum(running, 1e-12)
    search = cmndf[:, tau_min : tau_max + 1]
    below = search < 0.15
    first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    # walk from the threshold crossing down to the bottom of that dip
    rows, last = np.arange(len(first)), search.shape[1] - 1
    for _ in range(16):
        step = np.minimum(first + 1, last)
        first = np.where(search[rows, step] < search[rows, first], step, first)
    best = search[rows, first]
    # parabolic interpolation around the dip for sub-sample periods
    tau = first + tau_min
    left, mid, right = cmndf[rows, tau - 1], cmndf[rows, tau], cmndf[rows, tau + 1]
    curvature = left - 2 * mid + right
    offset = np.where(curvature > 1e-9, 0.5 * (left - right) / np.maximum(curvature, 1e-9), 0.0)
    level = 10 * np.log10(np.mean(frames[:, :window] ** 2, axis=1) + 1e-12)
    voiced = (best < 0.3) & (level > level.max() - 35.0)
    f0 = np.where(voiced, rate / (tau + np.clip(offset, -1, 1)), np.nan)
    return f0, best, voiced, level


def _formant_tracks(audio: np.ndarray, frames_mask: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """F1-F3 (Hz) per selected 10 ms frame from LPC roots: audio at 10 kHz, order 12, 25 ms Hamming frames."""
    low_rate, order = 10000, 12
    low = resample(audio.astype(np.float32), rate, low_rate).astype(np.float64)
    emphasised = np.append(low[0], low[1:] - 0.97 * low[:-1])
    window, hop = int(0.025 * low_rate), low_rate // 100
    frames = _frames(emphasised, window, hop)
    n = min(len(frames), len(frames_mask))
    frames = frames[:n][frames_mask[:n]][::2] * np.hamming(window)
    tracks = []
    for frame in frames:
        r = np.correlate(frame, frame, "full")[window - 1 : window + order]
        if r[0] <= 1e-10:
            continue
        roots = np.roots(_levinson(r, order))
        roots = roots[np.imag(roots) > 0]
        freqs = np.angle(roots) * low_rate / (2 * np.pi)
        bandwidths = -np.log(np.abs(roots)) * low_rate / np.pi
        peaks = np.sort(freqs[(freqs > 150) & (freqs < 4800) & (bandwidths < 400)])
        if len(peaks) >= 3:
            tracks.append(peaks[:3])
    return np.array(tracks).reshape(-1, 3)


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    a = np.zeros(order + 1)
    a[0], error = 1.0, r[0]
    for i in range(1, order + 1):
        k = -(r[i] + np.dot(a[1:i], r[i - 1 : 0 : -1])) / error
        a[1 : i + 1] = a[1 : i + 1] + k * np.concatenate([a[i - 1 : 0 : -1], [1.0]])
        error *= 1.0 - k * k
        if error <= 0:
            break
    return a


def voice_statistics(audio_list: list[np.ndarray], rate: int = SAMPLE_RATE) -> dict[str, float]:
    """Speaker-level statistics pooled over the frames of one voice's utterances (float audio at ``rate``).

    ``f0_median_hz`` and ``f0_spread_semitones`` (10th-90th percentile) from YIN; ``aperiodicity``: median YIN
    dip depth on voiced frames (higher = breathier/rougher); ``spectral_centroid_hz`` and ``ltas_db_*`` band
    levels (dB relative to the total) of the long-term average spectrum of active frames; ``f1_hz``-``f3_hz``:
    median LPC formants of clearly voiced frames; ``syllable_rate_hz``: loudness peaks per active second.
    """
    if not audio_list:
        raise ValueError("voice_statistics needs at least one utterance")
    f0s, dips, formants, n_peaks, active_seconds = [], [], [], 0, 0.0
    ltas = np.zeros(257)
    for audio in audio_list:
        audio = np.asarray(audio, dtype=np.float64)
        f0, dip, voiced, level = _yin(audio, rate)
        f0s.append(f0[voiced])
        dips.append(dip[voiced])
        formants.append(_formant_tracks(audio, voiced & (dip < 0.15), rate))
        power = np.abs(np.fft.rfft(_frames(audio, 512, 256) * np.hanning(512), axis=1)) ** 2
        frame_db = 10 * np.log10(power.mean(axis=1) + 1e-20)
        ltas += power[frame_db > frame_db.max() - 40].sum(axis=0)
        envelope = np.convolve(level, np.hanning(9) / np.hanning(9).sum(), mode="same")
        active = envelope > envelope.max() - 30
        n_peaks += len(
            find_peaks(np.where(active, envelope, envelope.max() - 60), prominence=4, distance=8)[0]
        )
        active_seconds += np.count_nonzero(active) / 100.0
    f0_all, dip_all, formant_all = np.concatenate(f0s), np.concatenate(dips), np.concatenate(formants)
    freqs = np.fft.rfftfreq(512, 1 / rate)
    total = ltas.sum() + 1e-20
    nan = math.nan
    stats = {
        "f0_median_hz": float(np.median(f0_all)) if f0_all.size else nan,
        "f0_spread_semitones": float(np.subtract(*np.percentile(12 * np.log2(f0_all), [90, 10])))
        if f0_all.size
        else nan,
        "aperiodicity": float(np.median(dip_all)) if dip_all.size else nan,
        "spectral_centroid_hz": float((freqs * ltas).sum() / total),
    }
    medians = np.median(formant_all, axis=0) if len(formant_all) else np.full(3, nan)
    stats.update({f"f{i + 1}_hz": float(medians[i]) for i in range(3)})
    for lo, hi in _LTAS_BANDS:
        stats[f"ltas_db_{lo}_{hi}"] = float(
            10 * np.log10(ltas[(freqs >= lo) & (freqs < hi)].sum() / total + 1e-20)
        )
    stats["syllable_rate_hz"] = float(n_peaks / max(active_seconds, 1e-9))
    return stats


def _standardised(table: np.ndarray) -> np.ndarray:
    """Log-transform Hz statistics, then z-score every column over all rows."""
    table = table.copy()
    for j, name in enumerate(STATISTICS):
        if name.endswith("_hz"):
            table[:, j] = np.log(np.maximum(table[:, j], 1e-6))
    std = np.nanstd(table, axis=0)
    return (table - np.nanmean(table, axis=0)) / np.where(std > 0, std, 1.0)


def distinctness_report(
    voices: list[Voice], n_utterances: int, rng: np.random.Generator, synthesizer: Synthesizer | None = None
) -> dict:
    """How distinguishable the voices are from simple speaker statistics.

    Every voice speaks the same ``n_utterances`` grammar sentences. Per statistic, ``fisher_ratio`` is the
    between-voice variance of the voice means over the mean within-voice (across-sentence) variance: above ~1
    the statistic separates voices more than sentences move it. In standardised statistic space (log for Hz,
    z-scored), ``mean_nearest_neighbour_distance`` between voice centroids is compared with
    ``mean_within_voice_distance`` (utterances to their own centroid); ``nearest_centroid_accuracy`` is the
    leave-one-out rate at which an utterance's nearest centroid is its own voice (chance = 1 / n_voices).
    """
    if len(voices) < 2 or n_utterances < 2:
        raise ValueError("distinctness_report needs at least 2 voices and 2 utterances per voice")
    synthesizer = synthesizer or get_synthesizer()
    texts = sentences(n_utterances, rng)
    rows = []
    for voice in voices:
        for text in texts:
            stats = voice_statistics([synthesizer.render(voice, text)])
            rows.append([stats[name] for name in STATISTICS])
    table = np.array(rows).reshape(len(voices), n_utterances, len(STATISTICS))
    z = _standardised(table.reshape(-1, len(STATISTICS))).reshape(table.shape)
    z = np.nan_to_num(z)
    means = z.mean(axis=1)
    within_var = z.var(axis=1, ddof=1).mean(axis=0)
    fisher = means.var(axis=0, ddof=1) / np.maximum(within_var, 1e-12)
    centroid_gaps = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=-1)
    np.fill_diagonal(centroid_gaps, np.inf)
    nearest = centroid_gaps.min(axis=1)
    a, b = np.unravel_index(np.argmin(centroid_gaps), centroid_gaps.shape)
    within = float(np.mean(np.linalg.norm(z - means[:, None, :], axis=-1)))
    correct = 0
    for v in range(len(voices)):
        for u in range(n_utterances):
            others = np.delete(z[v], u, axis=0).mean(axis=0)
            centroids = means.copy()
            centroids[v] = others
            correct += int(np.argmin(np.linalg.norm(centroids - z[v, u], axis=1)) == v)
    raw_means = np.nanmean(table, axis=1)
    return {
        "n_voices": len(voices),
        "n_utterances": n_utterances,
        "statistics": list(STATISTICS),
        "fisher_ratio": {name: float(f) for name, f in zip(STATISTICS, fisher, strict=True)},
        "mean_nearest_neighbour_distance": float(nearest.mean()),
        "min_nearest_neighbour_distance": float(nearest.min()),
        "closest_pair": [voices[a].voice_id, voices[b].voice_id],
        "mean_within_voice_distance": within,
        "separation_ratio": float(nearest.mean() / max(within, 1e-12)),
        "nearest_centroid_accuracy": correct / (len(voices) * n_utterances),
        "chance_accuracy": 1.0 / len(voices),
        "voice_means": {
            voice.voice_id: {name: float(x) for name, x in zip(STATISTICS, raw_means[i], strict=True)}
            for i, voice in enumerate(voices)
        },
    }
