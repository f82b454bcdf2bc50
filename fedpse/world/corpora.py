"""Real corpora on disk as users' speakers and noise places: LibriSpeech / speaker-per-folder speech, and
WHAM! / MUSAN / DEMAND / plain-folder noise.

Scanning reads only directory listings and file headers (``soundfile.info``), never audio, so it stays fast
on large trees. Audio is decoded later through the one loader (``fedpse.audio.io``): mono float32 at 16 kHz.
Hidden files and folders (names starting with ``.``, e.g. macOS ``._x.wav``) are ignored.

A noise place's timeline is the concatenation of its files as the loader returns them (16 kHz mono);
``NoisePlace.render`` decodes only the stretch of the files a requested range overlaps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from fedpse.audio.io import (
    AUDIO_EXTENSIONS,
    SAMPLE_RATE,
    AudioError,
    check_audio_file,
    find_audio_files,
    load_audio,
    resample,
    to_mono,
)

SPEECH_LAYOUTS = ("librispeech", "folders")
NOISE_LAYOUTS = ("wham", "musan", "demand", "folder")
LIBRISPEECH_LAYOUT = "root/<speaker>/<chapter>/*.flac"
WHAM_SPLITS = ("tr", "cv", "tt")
MUSAN_NOISE_SOURCES = ("free-sound", "sound-bible")
DEFAULT_MIN_PLACE_SECONDS = 60.0
_MAX_LISTED_ERRORS = 5


class CorpusError(ValueError):
    """A corpus on disk does not have the expected shape; the message names the path and what was expected."""


@dataclass
class BadFiles:
    """Corpus files (or noise places) a world build cannot use, each with why.

    ``skip=True`` (``key`` set to true): they are left out and listed. ``skip=False`` (the default, strict):
    ``check`` raises one error naming the first and counting the rest.
    """

    key: str  # the setting that turns skipping on, e.g. "world.speech.skip_bad_files"
    skip: bool = False
    what: str = "bad files"  # what the setting skips, for the hint
    found: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, reason: str) -> None:
        self.found.append((str(path), reason))

    def check(self) -> None:
        """In strict mode, a one-line ``CorpusError`` naming the first bad file if any was found."""
        if self.skip or not self.found:
            return
        path, reason = self.found[0]
        more = f"; {len(self.found) - 1} more found so far" if len(self.found) > 1 else ""
        raise CorpusError(f"{path}: {reason}{more}; {skip_hint(self.key, self.what)}")


def skip_hint(key: str, what: str = "bad files") -> str:
    return f"to skip {what} and list them, set {key}=true"


def take_files(
    files: list[str | Path], targets: list[float], seconds_of: Callable[[Path], float], bad: BadFiles
) -> tuple[list[list[tuple[str, float]]], bool]:
    """Files in order into consecutive partitions of at least ``targets[k]`` seconds each.

    ``seconds_of(path)`` gives a file's usable seconds or raises ``AudioError``; such a file is recorded in
    ``bad`` and passed over. Returns the partitions and whether every target was met (False: files ran out).
    """
    remaining = iter(files)
    parts: list[list[tuple[str, float]]] = []
    for target in targets:
        part, have = [], 0.0
        while have < target:
            path = next(remaining, None)
            if path is None:
                return [*parts, part], False
            try:
                seconds = seconds_of(Path(path))
            except AudioError as err:
                bad.add(err.path, err.reason)
                continue
            part.append((str(path), seconds))
            have += seconds
        parts.append(part)
    return parts, True


# ------------------------------------------------------------------------------------------- file headers
def _ratio(rate: int) -> tuple[int, int]:
    """(up, down) the loader's polyphase resampler uses to go from ``rate`` to 16 kHz."""
    ratio = Fraction(SAMPLE_RATE, rate).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def _loaded_length(frames: int, rate: int) -> int:
    """Samples ``load_audio`` returns for a file of ``frames`` frames at ``rate`` (resample_poly rounds up)."""
    if rate == SAMPLE_RATE:
        return frames
    up, down = _ratio(rate)
    return -(-frames * up // down)


def _header(path: Path):
    """``soundfile.info`` with the loader's checks; raises ``AudioError`` naming the file."""
    check_audio_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(
            path, f"cannot read audio header ({err}); the file is corrupt or not {path.suffix}"
        ) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "contains no samples")
    return info


def audio_seconds(path: str | Path) -> float:
    """Duration of ``path`` as the loader returns it (16 kHz samples / 16000), from the header only."""
    info = _header(Path(path))
    return _loaded_length(info.frames, info.samplerate) / SAMPLE_RATE


def _durations(files: list[Path], bad: BadFiles | None = None) -> list[float | None]:
    """Durations of many files; every unreadable file is reported at once (path and reason).

    With ``bad`` given, unreadable files are recorded there instead and get ``None``.
    """
    durations, errors = [], []
    for path in files:
        try:
            durations.append(audio_seconds(path))
        except AudioError as err:
            if bad is None:
                errors.append(str(err))
            else:
                bad.add(err.path, err.reason)
                durations.append(None)
    if errors:
        shown = "\n  ".join(errors[:_MAX_LISTED_ERRORS])
        more = (
            f"\n  ... and {len(errors) - _MAX_LISTED_ERRORS} more" if len(errors) > _MAX_LISTED_ERRORS else ""
        )
        raise CorpusError(f"{len(errors)} unreadable audio file(s); fix or remove them:\n  {shown}{more}")
    return durations


# ----------------------------------------------------------------------------------------- folder helpers
def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _audio_below(folder: Path) -> list[Path]:
    """Supported audio files under ``folder``, recursively, sorted, hidden ones skipped."""
    return [p for p in find_audio_files(folder) if _visible(p, folder)]


def _audio_in(folder: Path, suffixes: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files directly inside ``folder`` (not below), sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _existing_dir(root: str | Path | None, what: str) -> Path:
    if root is None:
        raise CorpusError(f"no {what} given; set the corpus path in the config")
    root = Path(root).expanduser()
    if not root.is_dir():
        reason = "is a file, not a folder" if root.exists() else "does not exist"
        raise CorpusError(f"{root}: {what} {reason}")
    return root


def _check_layout(layout: str, choices: tuple[str, ...], what: str) -> None:
    if layout not in choices:
        raise CorpusError(f"unknown {what} layout {layout!r}; expected one of {choices}")


# ------------------------------------------------------------------------------------------------- speech
@dataclass
class CorpusSpeaker:
    """One speaker of a corpus and their utterance files (sorted, stable order)."""

    speaker_id: str
    files: list[Path]


def scan_speech_corpus(root: str | Path, layout: str) -> list[CorpusSpeaker]:
    """Speakers of a speech corpus, sorted by id. ``layout``: ``"librispeech"`` or ``"folders"``.

    librispeech: ``root/<speaker>/<chapter>/*.flac`` (pass a split folder such as ``train-clean-100``).
    folders: every top-level subfolder of ``root`` is a speaker; .wav/.flac/.ogg files anywhere below it.
    """
    _check_layout(layout, SPEECH_LAYOUTS, "speech corpus")
    root = _existing_dir(root, "speech corpus root")
    loose = _audio_in(root)
    if loose:
        expected = LIBRISPEECH_LAYOUT if layout == "librispeech" else "one subfolder per speaker"
        raise CorpusError(
            f"{root}: audio files directly in the root (e.g. {loose[0].name}); expected {expected}"
        )
    speaker_dirs = _subdirs(root)
    if not speaker_dirs:
        expected = LIBRISPEECH_LAYOUT if layout == "librispeech" else "one subfolder per speaker"
        raise CorpusError(f"{root}: no speaker folders; expected {expected}")
    speakers = []
    for folder in speaker_dirs:
        files = _audio_below(folder)
        if not files:
            raise CorpusError(
                f"{folder}: speaker folder has no audio files ({', '.join(AUDIO_EXTENSIONS)}) below it"
            )
        if layout == "librispeech":
            _check_librispeech_speaker(root, folder, files)
        speakers.append(CorpusSpeaker(folder.name, files))
    return speakers


def _check_librispeech_speaker(root: Path, folder: Path, files: list[Path]) -> None:
    misplaced = [f for f in files if len(f.relative_to(folder).parts) != 2 or f.suffix.lower() != ".flac"]
    if not misplaced:
        return
    hint = ""
    if all(len(f.relative_to(folder).parts) == 3 for f in files):
        hint = f"; {folder.name!r} looks like a split folder, pass {folder} as the root instead of {root}"
    raise CorpusError(f"{misplaced[0]}: does not match the LibriSpeech layout {LIBRISPEECH_LAYOUT}{hint}")


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale; -inf for all-zero audio."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def _load_audible(path: str | Path, min_rms_dbfs: float, what: str, key: str) -> np.ndarray:
    audio = load_audio(path)
    level_dbfs = rms_dbfs(audio)
    if level_dbfs < min_rms_dbfs:
        raise AudioError(
            path,
            f"{what} is silent (RMS {level_dbfs:.1f} dBFS, below min_rms_dbfs={min_rms_dbfs:.1f}); "
            f"remove the file from the corpus or lower {key}",
        )
    return audio


def load_speech(path: str | Path, min_rms_dbfs: float = -60.0) -> np.ndarray:
    """One utterance via the loader (mono float32, 16 kHz); an all-silent one raises ``AudioError`` naming it."""
    return _load_audible(path, min_rms_dbfs, "utterance", "world.speech.min_rms_dbfs")


def load_noise(path: str | Path, min_rms_dbfs: float = -80.0) -> np.ndarray:
    """One noise recording via the loader; a silent one raises ``AudioError`` (mixing it would fake the SNR)."""
    return _load_audible(path, min_rms_dbfs, "noise recording", "world.noise.min_rms_dbfs")


def check_speaker_duration(speaker: CorpusSpeaker, needed_seconds: float) -> float:
    """Seconds of audio ``speaker`` has (from file headers); raises ``CorpusError`` if fewer than needed."""
    have = sum(_durations(speaker.files))
    if have < needed_seconds:
        folder = os.path.commonpath([str(f) for f in speaker.files]) if speaker.files else "no files"
        raise CorpusError(
            f"speaker {speaker.speaker_id!r} ({folder}): has {have:.1f} s of audio in {len(speaker.files)} "
            f"file(s), but the requested adaptation + test split needs {needed_seconds:.1f} s; "
            "use a longer speaker or shorten world.adaptation_minutes / test mixtures"
        )
    return have


# -------------------------------------------------------------------------------------------------- noise
@dataclass
class NoisePlace:
    """An acoustic place: its files, played one after another, form one noise timeline (16 kHz, mono).

    ``durations`` are the files' seconds as the loader returns them (see ``audio_seconds``).
    """

    place_id: str
    files: list[Path]
    durations: list[float]

    def __post_init__(self) -> None:
        self.files = [Path(f) for f in self.files]
        self.durations = [float(d) for d in self.durations]
        if len(self.files) != len(self.durations):
            raise CorpusError(
                f"noise place {self.place_id!r}: {len(self.files)} files but {len(self.durations)} durations"
            )

    @property
    def total_seconds(self) -> float:
        return sum(self._lengths()) / SAMPLE_RATE

    def _lengths(self) -> list[int]:
        return [int(round(d * SAMPLE_RATE)) for d in self.durations]

    def render(self, start_s: float, seconds: float) -> np.ndarray:
        """Samples ``[start_s, start_s + seconds)`` of the timeline; decodes only the files that overlap it."""
        first = int(round(start_s * SAMPLE_RATE))
        count = int(round(seconds * SAMPLE_RATE))
        lengths = self._lengths()
        total = sum(lengths)
        if first < 0 or count < 0 or first + count > total:
            where = self.files[0].parent if self.files else "no files"
            raise CorpusError(
                f"noise place {self.place_id!r} ({len(self.files)} file(s) in {where}): has {total / SAMPLE_RATE:.2f} s "
                f"of audio; the requested range {start_s:.2f}-{start_s + seconds:.2f} s is outside it"
            )
        out = np.zeros(count, dtype=np.float32)
        offset = 0
        for path, length in zip(self.files, lengths, strict=True):
            lo, hi = max(first, offset), min(first + count, offset + length)
            if lo < hi:
                piece = _read_span(path, lo - offset, hi - offset)
                out[lo - first : lo - first + len(piece)] = piece
            offset += length
        return out


def _read_span(path: Path, start: int, stop: int) -> np.ndarray:
    """Loader samples ``[start, stop)`` of one file (16 kHz mono), reading only the frames they depend on.

    For a resampled file the read starts on a multiple of the resampler's ``down`` factor and is padded by the
    filter's half-length, so the result equals the same slice of ``load_audio(path)`` (to float rounding).
    """
    info = _header(path)
    rate = info.samplerate
    up, down = _ratio(rate)
    if rate == SAMPLE_RATE:
        read_from, read_to, out_from = start, stop, start
    else:
        pad = math.ceil(10 * max(up, down) / up) + 1  # resample_poly's filter half-length, in input frames
        block = max(0, start * down // up - pad) // down
        read_from, out_from = block * down, block * up
        read_to = min(info.frames, -(-stop * down // up) + pad)
    try:
        data, _ = sf.read(str(path), start=read_from, stop=read_to, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(
            path, f"cannot decode audio ({err}); the file is corrupt or not {path.suffix}"
        ) from None
    if not np.all(np.isfinite(data)):
        raise AudioError(path, "contains NaN/inf samples; expected finite audio")
    audio = resample(to_mono(data), rate)
    piece = audio[start - out_from : stop - out_from]
    if len(piece) < stop - start:  # a header that overstates the length: pad rather than shift the timeline
        piece = np.pad(piece, (0, stop - start - len(piece)))
    return piece.astype(np.float32, copy=False)


def group_places(
    files: list[Path], durations: list[float], min_seconds: float, prefix: str = "place"
) -> list[NoisePlace]:
    """Pack consecutive files into places of at least ``min_seconds`` each, ids ``<prefix>-0000``, ...

    Used where files carry no place label (WHAM!, MUSAN, loose files). A trailing group shorter than
    ``min_seconds`` is dropped, so every place is long enough to hold a user's timeline.
    """
    places, group, group_seconds = [], [], 0.0
    for path, seconds in zip(files, durations, strict=True):
        group.append((Path(path), float(seconds)))
        group_seconds += seconds
        if group_seconds >= min_seconds:
            place_id = f"{prefix}-{len(places):04d}"
            places.append(NoisePlace(place_id, [p for p, _ in group], [s for _, s in group]))
            group, group_seconds = [], 0.0
    return places


def scan_noise_corpus(
    root: str | Path,
    layout: str,
    min_place_seconds: float = DEFAULT_MIN_PLACE_SECONDS,
    bad: BadFiles | None = None,
) -> list[NoisePlace]:
    """Noise places of a corpus, sorted by id. ``layout``: ``"wham"``, ``"musan"``, ``"demand"`` or ``"folder"``.

    wham: ``root/{tr,cv,tt}/*.wav``, consecutive files of a split grouped into places (``tr-0000``, ...).
    musan: ``root/noise/{free-sound,sound-bible}/`` and ``root/music/<source>/`` if present; each source's
    files grouped into places (``noise-free-sound-0000``, ``music-fma-0000``, ...). MUSAN speech is not noise.
    demand: ``root/<ENV>/ch01.wav`` or ``root/<ENV>_16k/<ENV>/ch01.wav``; one place per environment (ch01 only).
    folder: each immediate subfolder with audio (recursively) is one place named after it; audio files loose
    in ``root`` are grouped into places ``loose-0000``, ...; subfolders without audio are ignored.
    Grouped layouts drop a trailing group shorter than ``min_place_seconds`` (see ``group_places``).
    Unreadable files stop the scan with one error listing them; with ``bad`` given they are recorded there and
    left out instead.
    """
    _check_layout(layout, NOISE_LAYOUTS, "noise corpus")
    root = _existing_dir(root, "noise corpus root")
    scan = {"wham": _scan_wham, "musan": _scan_musan, "demand": _scan_demand, "folder": _scan_folder}[layout]
    places = scan(root, min_place_seconds, bad)
    if not places:
        raise CorpusError(
            f"{root}: no noise place of at least {min_place_seconds:.0f} s could be formed from the {layout} "
            "corpus; add longer recordings"
        )
    ids = [p.place_id for p in places]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CorpusError(f"{root}: more than one noise place is named {duplicates[0]!r}; keep only one copy")
    return sorted(places, key=lambda p: p.place_id)


def _readable(files: list[Path], bad: BadFiles | None) -> tuple[list[Path], list[float]]:
    """The files whose headers read, and their durations (see ``_durations``)."""
    pairs = [(f, d) for f, d in zip(files, _durations(files, bad), strict=True) if d is not None]
    return [f for f, _ in pairs], [d for _, d in pairs]


def _grouped(files: list[Path], min_seconds: float, prefix: str, bad: BadFiles | None) -> list[NoisePlace]:
    return group_places(*_readable(files, bad), min_seconds, prefix)


def _scan_wham(root: Path, min_seconds: float, bad: BadFiles | None) -> list[NoisePlace]:
    splits = [root / s for s in WHAM_SPLITS if (root / s).is_dir()]
    if not splits:
        raise CorpusError(
            f"{root}: no WHAM! noise split folders; expected root/tr, root/cv and/or root/tt with *.wav"
        )
    places = []
    for split in splits:
        files = _audio_in(split, (".wav",))
        if not files:
            raise CorpusError(f"{split}: WHAM! split folder has no .wav files; expected {split}/*.wav")
        places += _grouped(files, min_seconds, split.name, bad)
    return places


def _scan_musan(root: Path, min_seconds: float, bad: BadFiles | None) -> list[NoisePlace]:
    sources = [root / "noise" / s for s in MUSAN_NOISE_SOURCES if (root / "noise" / s).is_dir()]
    if not sources:
        raise CorpusError(
            f"{root}: not a MUSAN root; expected root/noise/free-sound and/or root/noise/sound-bible with *.wav"
        )
    music = root / "music"
    if music.is_dir():
        sources += _subdirs(music)
    places = []
    for source in sources:
        files = _audio_below(source)
        if not files:
            raise CorpusError(f"{source}: MUSAN source folder has no audio files")
        places += _grouped(files, min_seconds, f"{source.parent.name}-{source.name}", bad)
    if music.is_dir() and _audio_in(music):
        places += _grouped(_audio_in(music), min_seconds, "music", bad)
    return places


def _scan_demand(root: Path, min_seconds: float, bad: BadFiles | None) -> list[NoisePlace]:
    channels = []
    for env in _subdirs(root):
        candidates = [env / "ch01.wav"] + [sub / "ch01.wav" for sub in _subdirs(env)]
        channels += [c for c in candidates if c.is_file()]
    if not channels:
        raise CorpusError(
            f"{root}: no DEMAND environments; expected root/<ENV>/ch01.wav or root/<ENV>_16k/<ENV>/ch01.wav"
        )
    channels, durations = _readable(channels, bad)
    return [NoisePlace(c.parent.name, [c], [d]) for c, d in zip(channels, durations, strict=True)]


def _scan_folder(root: Path, min_seconds: float, bad: BadFiles | None) -> list[NoisePlace]:
    places = []
    for folder in _subdirs(root):
        files = _audio_below(folder)
        if files:
            files, durations = _readable(files, bad)
            if files:
                places.append(NoisePlace(folder.name, files, durations))
    loose = _audio_in(root)
    if loose:
        places += _grouped(loose, min_seconds, "loose", bad)
    if not places and not loose:
        raise CorpusError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the folder or below it")
    return places
