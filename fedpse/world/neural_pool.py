"""Neural-TTS speakers added to the pretraining pool (``pretrain.neural_voices``): voices of a second synthesizer
beside the world's espeak-ng pretraining speakers, so a model does not learn one synthesizer's waveform.

The speakers are drawn from their own seeded stream (``S_NEURAL_POOL``, apart from every stream of the world's
build) with the engine's default voice settings (``NeuralTtsConfig``), speak sentences of the world's grammar, and
are rendered once into the world folder (``pretrain/neural/<engine>-seed<seed>-u<utterances>/<speaker>/``; a
``done.json`` per speaker makes it resumable). Only the training split gets them: validation stays on the world's
held-out espeak-ng speakers, so validation figures stay comparable with models trained without them.

A test world whose users speak with the same engine would no longer be held out: the model card records the engine
(``neural_voices.engine``) and ``simulations/heldout.py`` refuses such a teacher on such a world.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedpse.config import ConfigError

S_NEURAL_POOL = 101  # seed stream of the pretraining pool's neural voices (world streams are 1..7)
ENGINE_KEY = "pretrain.neural_engine"


def _folder(world, engine: str, seed: int, utterances: int) -> Path:
    return Path(world.root) / "pretrain" / "neural" / f"{engine}-seed{seed}-u{utterances}"


def neural_pretrain_speech(
    world, engine: str, speakers: int, utterances: int, seed: int, log: Callable[[str], None] = print
) -> dict[str, list[Path]]:
    """``speakers`` voices of ``engine``, ``utterances`` files each: ``{speaker id: [flac paths]}``, rendered on
    first use (a missing engine package is a one-line ``ConfigError`` with the pip command)."""
    from fedpse.config.world import NeuralTtsConfig
    from fedpse.world.neural_voices import NeuralVoiceError, check_installed, sample_neural_voices

    try:
        check_installed(engine)
    except NeuralVoiceError as err:
        raise ConfigError(str(err).replace("world.speech.neural_tts.engine", ENGINE_KEY)) from None
    voices = sample_neural_voices(
        speakers, np.random.default_rng([seed, S_NEURAL_POOL]), NeuralTtsConfig(engine=engine)
    )
    root = _folder(world, engine, seed, utterances)
    out: dict[str, list[Path]] = {}
    todo = [v for v in voices if not (root / v.voice_id / "done.json").is_file()]
    if todo:
        log(
            f"rendering {len(todo)} of {speakers} {engine} pretraining speakers × {utterances} utterances into {root}"
        )
    for i, voice in enumerate(voices):
        folder = root / voice.voice_id
        done = folder / "done.json"
        if not done.is_file():
            _render_speaker(voice, folder, utterances, np.random.default_rng([seed, S_NEURAL_POOL, i]))
        record = json.loads(done.read_text())
        out[f"{engine}-pt-{voice.voice_id}"] = [folder / item["path"] for item in record["items"]]
    return out


def _render_speaker(voice, folder: Path, utterances: int, rng: np.random.Generator) -> None:
    """Render into a private folder and rename it into place when complete: two pretraining runs rendering the
    same speaker at once never read each other's half-written files (the later rename finds the folder there)."""
    from fedpse.world.neural_voices import render
    from fedpse.world.render import save_pretrain_utterance
    from fedpse.world.text import sentence

    staging = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    items = []
    for k in range(utterances):
        text = sentence(rng)
        path = staging / f"{k:03d}.flac"
        _, sha = save_pretrain_utterance(render(voice, text), path)  # stored as the espeak pool's are
        items.append({"path": path.name, "text": text, "sha256": sha})
    (staging / "done.json").write_text(json.dumps({"voice": voice.to_dict(), "items": items}, sort_keys=True))
    if folder.is_dir() and not (folder / "done.json").is_file():
        shutil.rmtree(folder)  # left unfinished by an older fedpse
    try:
        staging.rename(folder)
    except OSError:  # another run finished this speaker first: same seed, same audio
        shutil.rmtree(staging, ignore_errors=True)


def check_held_out(cfg, card: dict, what: str) -> None:
    """A ``ConfigError`` (one line) when ``cfg``'s users speak with the neural engine ``card``'s model was pretrained
    on (``neural_voices.engine``): such a world is not held out for that model."""
    speech = cfg.world.speech
    engine = (card or {}).get("neural_voices", {}).get("engine")
    if speech.source == "neural_tts" and engine is not None and engine == speech.neural_tts.engine:
        raise ConfigError(
            f"world.speech.neural_tts.engine={engine}: {what} was pretrained on {engine} voices "
            "(its card's neural_voices), so this world is not held out for it; use another engine for the users"
        )
