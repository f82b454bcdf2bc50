"""One loader everywhere: any file -> mono float32 at 16 kHz, or an error naming the file."""

import numpy as np
import pytest
import soundfile as sf

from fedpse.audio.io import AudioError, decode_audio, encode_flac, find_audio_files, load_audio, save_audio


def _tone(rate: int, seconds: float = 1.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_any_sample_rate_is_resampled_to_16k(tmp_path, rate):
    path = tmp_path / f"t{rate}.wav"
    sf.write(str(path), _tone(rate), rate)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 3  # the tone survives resampling


def test_multichannel_is_downmixed_by_averaging(tmp_path):
    left, right = _tone(16000), np.zeros(16000, np.float32)
    sf.write(str(tmp_path / "st.flac"), np.stack([left, right], axis=1), 16000)
    np.testing.assert_allclose(load_audio(tmp_path / "st.flac"), left / 2, atol=1e-4)


def test_integer_pcm_is_scaled_to_unit_range(tmp_path):
    sf.write(str(tmp_path / "i.wav"), (_tone(16000) * 32767).astype(np.int16), 16000, subtype="PCM_16")
    assert 0.29 < np.max(np.abs(load_audio(tmp_path / "i.wav"))) < 0.31


def test_nan_and_inf_samples_are_rejected(tmp_path):
    x = _tone(16000)
    x[100], x[200] = np.nan, np.inf
    sf.write(str(tmp_path / "bad.wav"), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"bad\.wav: contains 2 NaN/inf samples"):
        load_audio(tmp_path / "bad.wav")


def test_bad_files_are_named_with_what_was_expected(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.flac").write_bytes(b"not audio at all" * 10)
    (tmp_path / "notes.mp3").write_bytes(b"ID3")
    sf.write(str(tmp_path / "zero.wav"), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: file is empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match=r"junk\.flac: cannot decode audio"):
        load_audio(tmp_path / "junk.flac")
    with pytest.raises(AudioError, match=r"notes\.mp3: unsupported audio format '\.mp3'"):
        load_audio(tmp_path / "notes.mp3")
    with pytest.raises(AudioError, match=r"zero\.wav: contains no samples"):
        load_audio(tmp_path / "zero.wav")
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "missing.wav")


def test_flac_round_trip_and_in_memory_decoding(tmp_path):
    x = _tone(16000)
    save_audio(tmp_path / "a.flac", x)
    np.testing.assert_allclose(load_audio(tmp_path / "a.flac"), x, atol=1 / 32767)
    np.testing.assert_allclose(decode_audio(encode_flac(x)), x, atol=1 / 32767)


def test_find_audio_files_is_recursive_and_sorted(tmp_path):
    for name in ["b/2.ogg", "a/1.wav", "a/x.txt", "c.flac"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)] == [
        "a/1.wav",
        "b/2.ogg",
        "c.flac",
    ]
