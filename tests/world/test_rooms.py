"""Shoebox rooms: plausible sampled rooms, RIRs with the requested RT60, an on-disk cache, aligned reverb."""

import numpy as np
import pytest
from pyroomacoustics.experimental import measure_rt60

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world import rooms
from fedpse.world.rooms import Room, direct_path_index, reverberate, room_rirs, sample_room

ROOM = Room(dims_m=(5.0, 4.0, 2.8), rt60_s=0.4, source_m=(1.5, 1.2, 1.6), mic_m=(3.2, 2.5, 1.0), seed=7)


def test_sampled_rooms_are_plausible_and_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        room = sample_room(rng, (0.3, 0.6))
        assert 0.3 <= room.rt60_s <= 0.6
        assert 3.0 <= min(room.dims_m[:2]) and max(room.dims_m) <= 8.0
        for point in (room.source_m, room.mic_m):
            assert all(0.5 <= p <= d - 0.5 for p, d in zip(point, room.dims_m, strict=True))
        assert room.distance_m >= 0.5
        assert Room.from_dict(room.to_dict()) == room
    assert sample_room(np.random.default_rng(3)) == sample_room(np.random.default_rng(3))


def test_elongated_room_still_gets_its_rt60():
    """Sabine alone overshoots here by ~50 %; the one-step absorption correction brings it back."""
    long_room = Room((7.89, 3.633, 2.556), 0.467, (1.0, 1.0, 1.5), (5.0, 2.5, 1.0))
    full, _ = room_rirs(long_room)
    assert measure_rt60(full, SAMPLE_RATE, decay_db=30) == pytest.approx(long_room.rt60_s, rel=0.2)


def test_positions_outside_the_room_are_rejected():
    with pytest.raises(ValueError, match="mic_m=.* is not inside the room"):
        Room((4.0, 3.0, 2.5), 0.3, (1.0, 1.0, 1.0), (5.0, 1.0, 1.0))


def test_rir_has_the_requested_rt60_and_a_shorter_early_part(tmp_path):
    full, early = room_rirs(ROOM, tmp_path, early_ms=50.0)
    assert full.dtype == np.float32 and early.dtype == np.float32
    assert measure_rt60(full, SAMPLE_RATE, decay_db=30) == pytest.approx(ROOM.rt60_s, rel=0.2)
    direct = direct_path_index(ROOM)
    assert len(early) < len(full) and len(early) == direct + 0.055 * SAMPLE_RATE
    np.testing.assert_array_equal(early[: direct + 800], full[: direct + 800])
    # Unit direct-path gain: the peak of the direct path's fractional-delay sinc lies in [sinc(0.5), 1].
    assert 0.6 <= full[direct - 1 : direct + 2].max() <= 1.05


def test_second_call_reads_the_cache_instead_of_simulating(tmp_path, monkeypatch):
    first, _ = room_rirs(ROOM, tmp_path)
    assert len(list(tmp_path.glob("rir-*.npy"))) == 1

    def no_simulation(room):
        raise AssertionError("RIR was simulated again despite the cache")

    monkeypatch.setattr(rooms, "_simulate_rir", no_simulation)
    again, _ = room_rirs(ROOM, tmp_path)
    np.testing.assert_array_equal(first, again)


def test_reverberate_keeps_length_and_aligns_the_direct_path(tmp_path):
    speech = np.random.default_rng(0).standard_normal(SAMPLE_RATE // 2).astype(np.float32) * 0.1
    reverberant, dry = reverberate(speech, ROOM, "dry", 50.0, tmp_path)
    assert reverberant.shape == dry.shape == speech.shape
    np.testing.assert_array_equal(dry, speech)
    reverberant, early = reverberate(speech, ROOM, "early", 50.0, tmp_path)
    assert early.shape == speech.shape and early.dtype == np.float32
    # Aligned: the reverberant and early-reverb speech correlate best with the dry speech at lag 0.
    for signal in (reverberant, early):
        lags = [float(np.dot(np.roll(signal, -lag), speech)) for lag in range(-5, 6)]
        assert int(np.argmax(lags)) == 5
    with pytest.raises(ValueError, match="unknown reverberation target 'wet'"):
        reverberate(speech, ROOM, "wet", 50.0, tmp_path)
