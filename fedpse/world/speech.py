"""Speech for users and the pretraining pool, from built-in TTS voices or a speaker corpus on disk. Users' TTS voices
are espeak-ng voices (``voices.py``) or, with ``world.speech.source=neural_tts``, neural ones (``neural_voices.py``);
the pretraining pool and babble talkers are espeak-ng voices with either.

Both kinds produce continuous *streams* (utterances separated by short pauses) that the user renderer cuts into
adaptation chunks and test mixtures. Adaptation and test never share an utterance: TTS test sentences exclude
the user's adaptation sentences; a corpus speaker's files are split into disjoint test and adaptation partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedpse.audio.io import SAMPLE_RATE

PAUSE_S = (0.15, 0.7)  # silence between utterances in a stream


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """One independent, reproducible stream per (seed, purpose, index...)."""
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


@dataclass
class Stream:
    audio: np.ndarray
    texts: list[str] = field(default_factory=list)  # TTS sentences, or corpus file paths


def _pause(rng: np.random.Generator) -> np.ndarray:
    return np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), dtype=np.float32)


def _fit(pieces: list[np.ndarray], n: int) -> np.ndarray:
    out = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if len(out) < n:
        out = np.pad(out, (0, n - len(out)))
    return out[:n].astype(np.float32, copy=False)


def _renderer(voice):
    """``text -> audio`` for ``voice``: espeak-ng renders a ``voices.Voice``, a neural engine a ``NeuralVoice``."""
    from fedpse.world.neural_voices import NeuralVoice, render

    if isinstance(voice, NeuralVoice):
        return lambda text: render(voice, text)
    from fedpse.world.voices import get_synthesizer

    synth = get_synthesizer()
    return lambda text: synth.render(voice, text)


def tts_stream(
    voice, seconds: float, rng: np.random.Generator, exclude: set[str] | frozenset = frozenset()
) -> Stream:
    """Fresh TTS utterances of ``voice`` (espeak-ng or neural) until ``seconds`` are filled; sentences in
    ``exclude`` are skipped."""
    from fedpse.world.text import sentence

    render = _renderer(voice)
    n = int(round(seconds * SAMPLE_RATE))
    pieces, texts, have = [_pause(rng)[: SAMPLE_RATE // 10]], [], 0
    while have < n:
        text = sentence(rng)
        if text in exclude:
            continue
        audio = render(text)
        pieces += [audio, _pause(rng)]
        texts.append(text)
        have += len(audio) + len(pieces[-1])
    return Stream(_fit(pieces, n), texts)


def files_stream(files: list[str], seconds: float, rng: np.random.Generator, min_rms_dbfs: float) -> Stream:
    """A corpus partition's files in order, with short pauses, until ``seconds`` are filled."""
    from fedpse.world.corpora import load_speech

    n = int(round(seconds * SAMPLE_RATE))
    pieces, used, have = [], [], 0
    for path in files:
        if have >= n:
            break
        audio = load_speech(path, min_rms_dbfs)
        pieces += [audio, _pause(rng)]
        used.append(str(path))
        have += len(audio) + len(pieces[-1])
    return Stream(_fit(pieces, n), used)


def split_speaker(
    speaker, test_seconds: float, adapt_seconds: float, bad=None, seconds_of=None
) -> tuple[list[str], list[str]]:
    """(test files, adaptation files) of a corpus speaker: disjoint, test first, each holding at least the audio
    asked for. A file ``seconds_of`` (default: its header) cannot read goes to ``bad`` (a ``BadFiles``) and is
    passed over. Raises ``CorpusError`` naming the speaker if the usable files run out.
    """
    import os

    from fedpse.world.corpora import BadFiles, CorpusError, audio_seconds, take_files

    bad = BadFiles("world.speech.skip_bad_files") if bad is None else bad
    before = len(bad.found)
    parts, complete = take_files(
        speaker.files, [test_seconds, adapt_seconds], seconds_of or audio_seconds, bad
    )
    if not complete:
        have = sum(s for part in parts for _, s in part)
        used = sum(len(part) for part in parts)
        skipped = len(bad.found) - before
        folder = os.path.commonpath([str(f) for f in speaker.files]) if speaker.files else "no files"
        after = f" (after passing over {skipped} bad file(s))" if skipped else ""
        raise CorpusError(
            f"speaker {speaker.speaker_id!r} ({folder}): has {have:.1f} s of usable audio in {used} file(s){after}, "
            f"but the requested split needs {test_seconds:.1f} s of test + {adapt_seconds:.1f} s of adaptation "
            "audio in whole files; use a longer speaker or shorten world.adaptation_minutes / test mixtures"
        )
    return [p for p, _ in parts[0]], [p for p, _ in parts[1]]


def scan_corpus_speakers(root: str | Path, layout: str, num_users: int, seed: int):
    """Corpus speakers shuffled by seed: the first ``num_users`` are users, the rest the pretraining pool."""
    from fedpse.world.corpora import scan_speech_corpus

    speakers = scan_speech_corpus(root, layout)
    order = [speakers[i] for i in seeded_rng(seed, 11).permutation(len(speakers))]
    if len(order) < num_users + 2:
        raise ValueError(
            f"{root}: the corpus has {len(order)} speakers; world.num_users={num_users} users plus at least 2 "
            "pretraining speakers are needed (lower world.num_users)"
        )
    return order[:num_users], order[num_users:]
