"""Real corpora plug in through directory scans: speakers and noise places, with clear errors on bad trees."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fedpse.audio.io import SAMPLE_RATE, AudioError, load_audio
from fedpse.world.corpora import (
    CorpusError,
    NoisePlace,
    audio_seconds,
    check_speaker_duration,
    group_places,
    load_speech,
    scan_noise_corpus,
    scan_speech_corpus,
)


def write(
    path: Path, seconds: float = 0.5, rate: int = SAMPLE_RATE, channels: int = 1, seed: int = 0
) -> Path:
    """A short noise-like 'utterance' (any rate / channel count) written with soundfile."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * rate))
    audio = 0.1 * rng.standard_normal((frames, channels)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio if channels > 1 else audio[:, 0], rate)
    return path


# ------------------------------------------------------------------------------------------------- speech
def test_librispeech_tree_gives_sorted_speakers_with_sorted_files(tmp_path):
    for spk, chapter in [("26", "495"), ("19", "198"), ("19", "227")]:
        for k in (1, 0):
            write(tmp_path / spk / chapter / f"{spk}-{chapter}-{k:04d}.flac", seed=k)
    (tmp_path / "19" / "198" / "19-198.trans.txt").write_text("0000 HELLO\n")

    speakers = scan_speech_corpus(tmp_path, "librispeech")

    assert [s.speaker_id for s in speakers] == ["19", "26"]
    assert [f.name for f in speakers[0].files] == [
        "19-198-0000.flac",
        "19-198-0001.flac",
        "19-227-0000.flac",
        "19-227-0001.flac",
    ]


def test_speaker_per_folder_tree_finds_audio_recursively_in_any_format(tmp_path):
    write(tmp_path / "bob" / "take.flac")
    write(tmp_path / "alice" / "a.wav", rate=8000)
    write(tmp_path / "alice" / "day2" / "b.ogg", rate=44100, channels=2)
    write(tmp_path / "alice" / "._a.wav")  # macOS resource fork: ignored

    speakers = scan_speech_corpus(tmp_path, "folders")

    assert [(s.speaker_id, [f.name for f in s.files]) for s in speakers] == [
        ("alice", ["a.wav", "b.ogg"]),
        ("bob", ["take.flac"]),
    ]
    stereo_44k = load_speech(speakers[0].files[1])  # downmixed and resampled by the loader
    assert stereo_44k.ndim == 1 and abs(len(stereo_44k) - SAMPLE_RATE // 2) <= 1
    assert check_speaker_duration(speakers[0], 0.9) == pytest.approx(1.0, abs=1e-3)


def test_missing_root_and_unknown_layout_are_clear(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        scan_speech_corpus(tmp_path / "nowhere", "folders")
    with pytest.raises(CorpusError, match="unknown speech corpus layout 'timit'"):
        scan_speech_corpus(tmp_path, "timit")


def test_speaker_folder_without_audio_is_named(tmp_path):
    write(tmp_path / "alice" / "a.wav")
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "notes.txt").write_text("no audio here")
    with pytest.raises(CorpusError, match=r"bob: speaker folder has no audio files"):
        scan_speech_corpus(tmp_path, "folders")


def test_librispeech_root_with_wrong_layout_is_rejected(tmp_path):
    write(tmp_path / "19" / "19-198-0000.flac")  # no chapter folder
    with pytest.raises(CorpusError, match=r"19-198-0000.flac: does not match the LibriSpeech layout"):
        scan_speech_corpus(tmp_path, "librispeech")


def test_librispeech_parent_of_splits_points_to_the_split(tmp_path):
    write(tmp_path / "train-clean-100" / "19" / "198" / "19-198-0000.flac")
    with pytest.raises(CorpusError, match="pass .*train-clean-100 as the root"):
        scan_speech_corpus(tmp_path, "librispeech")


def test_silent_utterance_is_rejected_naming_the_file(tmp_path):
    silent = tmp_path / "alice" / "silent.wav"
    silent.parent.mkdir()
    sf.write(str(silent), np.zeros(8000, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"silent.wav: utterance is silent"):
        load_speech(silent)


def test_speaker_too_short_says_who_has_how_much_and_what_is_needed(tmp_path):
    write(tmp_path / "alice" / "a.wav", seconds=1.0)
    write(tmp_path / "alice" / "b.wav", seconds=2.0)
    (speaker,) = scan_speech_corpus(tmp_path, "folders")
    with pytest.raises(
        CorpusError, match=r"speaker 'alice' .* has 3.0 s of audio in 2 file\(s\).* needs 60.0 s"
    ):
        check_speaker_duration(speaker, 60.0)


def test_corrupt_and_empty_files_are_named(tmp_path):
    write(tmp_path / "alice" / "ok.wav")
    (tmp_path / "alice" / "broken.wav").write_bytes(b"RIFF not really a wave file" * 10)
    (tmp_path / "alice" / "empty.flac").write_bytes(b"")
    (speaker,) = scan_speech_corpus(tmp_path, "folders")  # scanning decodes nothing
    with pytest.raises(CorpusError, match=r"2 unreadable") as err:
        check_speaker_duration(speaker, 1.0)
    assert "broken.wav: cannot read audio header" in str(err.value)
    assert "empty.flac: file is empty" in str(err.value)
    with pytest.raises(AudioError, match="broken.wav"):
        load_speech(tmp_path / "alice" / "broken.wav")


# -------------------------------------------------------------------------------------------------- noise
def test_render_across_file_boundaries_equals_the_concatenation(tmp_path):
    files = [
        write(tmp_path / "a.wav", seconds=0.7, seed=1),
        write(tmp_path / "b.wav", seconds=0.3, rate=8000, seed=2),
        write(tmp_path / "c.flac", seconds=0.9, rate=44100, channels=2, seed=3),
        write(tmp_path / "d.ogg", seconds=0.4, seed=4),
    ]
    place = NoisePlace("p", files, [audio_seconds(f) for f in files])
    timeline = np.concatenate([load_audio(f) for f in files])
    assert len(timeline) == round(place.total_seconds * SAMPLE_RATE)

    for start_s, seconds in [(0.5, 0.4), (0.9, 0.5), (0.0, place.total_seconds), (1.2, 0.1)]:
        a, n = round(start_s * SAMPLE_RATE), round(seconds * SAMPLE_RATE)
        np.testing.assert_allclose(place.render(start_s, seconds), timeline[a : a + n], atol=1e-5)


def test_render_past_the_end_is_a_clear_error(tmp_path):
    f = write(tmp_path / "a.wav", seconds=1.0)
    place = NoisePlace("cafe", [f], [audio_seconds(f)])
    with pytest.raises(
        CorpusError, match=r"noise place 'cafe' .* has 1.00 s of audio; the requested range 0.50-1.50 s"
    ):
        place.render(0.5, 1.0)


def test_group_places_packs_consecutive_files_and_drops_a_short_tail():
    files = [Path(f"{k}.wav") for k in range(5)]
    places = group_places(files, [2.0, 2.0, 5.0, 1.0, 1.0], min_seconds=4.0, prefix="tr")
    assert [(p.place_id, [f.name for f in p.files]) for p in places] == [
        ("tr-0000", ["0.wav", "1.wav"]),
        ("tr-0001", ["2.wav"]),
    ]


def test_wham_splits_with_stereo_files_group_into_places(tmp_path):
    for split, count in [("tr", 4), ("tt", 2)]:
        for k in range(count):
            write(tmp_path / split / f"mix{k}.wav", seconds=0.5, channels=2, seed=k)
    places = scan_noise_corpus(tmp_path, "wham", min_place_seconds=1.0)
    assert [(p.place_id, len(p.files)) for p in places] == [("tr-0000", 2), ("tr-0001", 2), ("tt-0000", 2)]
    assert places[0].render(0.25, 0.5).shape == (SAMPLE_RATE // 2,)


def test_musan_noise_and_music_sources_become_places(tmp_path):
    write(tmp_path / "noise" / "free-sound" / "noise-free-sound-0000.wav", seconds=1.0)
    write(tmp_path / "noise" / "sound-bible" / "noise-sound-bible-0000.wav", seconds=1.0, rate=44100)
    write(tmp_path / "music" / "fma" / "music-fma-0000.wav", seconds=1.0)
    write(tmp_path / "speech" / "librivox" / "speech-0000.wav", seconds=1.0)  # not noise
    places = scan_noise_corpus(tmp_path, "musan", min_place_seconds=1.0)
    assert [p.place_id for p in places] == [
        "music-fma-0000",
        "noise-free-sound-0000",
        "noise-sound-bible-0000",
    ]
    with pytest.raises(CorpusError, match="not a MUSAN root"):
        scan_noise_corpus(tmp_path / "music", "musan")


def test_demand_environments_in_both_distributed_layouts(tmp_path):
    write(tmp_path / "DKITCHEN" / "ch01.wav", seconds=0.5)
    write(tmp_path / "DKITCHEN" / "ch02.wav", seconds=0.5)
    write(tmp_path / "OOFFICE_16k" / "OOFFICE" / "ch01.wav", seconds=0.5, rate=48000)
    places = scan_noise_corpus(tmp_path, "demand")
    assert [(p.place_id, [f.name for f in p.files]) for p in places] == [
        ("DKITCHEN", ["ch01.wav"]),
        ("OOFFICE", ["ch01.wav"]),
    ]
    assert places[1].total_seconds == pytest.approx(0.5)


def test_plain_folder_places_and_loose_files(tmp_path):
    write(tmp_path / "cafe" / "morning" / "1.wav", seconds=0.5)
    write(tmp_path / "cafe" / "2.flac", seconds=0.5)
    write(tmp_path / "street" / "1.ogg", seconds=0.5)
    (tmp_path / "docs").mkdir()
    write(tmp_path / "x.wav", seconds=0.6)
    write(tmp_path / "y.wav", seconds=0.6)
    write(tmp_path / "z.wav", seconds=0.2)  # too-short leftover: dropped
    places = scan_noise_corpus(tmp_path, "folder", min_place_seconds=1.0)
    assert [(p.place_id, len(p.files)) for p in places] == [("cafe", 2), ("loose-0000", 2), ("street", 1)]


def test_noise_folder_without_audio_and_corrupt_noise_file(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no audio files"):
        scan_noise_corpus(tmp_path / "empty", "folder")
    write(tmp_path / "corpus" / "cafe" / "ok.wav")
    (tmp_path / "corpus" / "cafe" / "bad.wav").write_bytes(b"\x00" * 100)
    with pytest.raises(CorpusError, match=r"bad.wav: cannot read audio header"):
        scan_noise_corpus(tmp_path / "corpus", "folder")
    with pytest.raises(CorpusError, match="expected root/tr"):
        scan_noise_corpus(tmp_path / "corpus", "wham")
