"""Bad corpus audio: the checks a worker runs on a speaker's or noise place's files, the errors that name a
bad file or place and the setting that skips it, and ``skipped_files.csv``.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from fedpse.audio.io import AudioError

SPEECH_SKIP_KEY, NOISE_SKIP_KEY = "world.speech.skip_bad_files", "world.noise.skip_bad_files"
SKIPPED_FILES = "skipped_files.csv"


def _place_where(files) -> str:
    return os.path.commonpath([str(f) for f in files]) if files else "no files"


def _place_dict(place) -> dict:
    files = [str(f) for f in place.files]
    return {"kind": "corpus", "place_id": place.place_id, "files": files, "durations": list(place.durations)}


def _place_name(place: dict) -> str:
    if place["kind"] == "procedural":
        return f"{place['env_id']!r} ({place['family']})"
    return f"{place['place_id']!r} ({_place_where(place['files'])})"


def _with_skip_hint(err: AudioError, key: str) -> AudioError:
    """The same error, saying which setting skips bad files instead of stopping."""
    from fedpse.world.corpora import skip_hint

    return AudioError(err.path, f"{err.reason}; {skip_hint(key)}")


def _job_check_speaker(job: dict) -> dict:
    """Decode a user speaker's files in order until the test + adaptation split is met; bad ones passed over."""
    from fedpse.world.corpora import BadFiles, audio_seconds, load_speech
    from fedpse.world.speech import split_speaker

    def seconds_of(path: Path) -> float:
        load_speech(path, job["min_rms_dbfs"])
        return audio_seconds(path)

    bad = BadFiles(SPEECH_SKIP_KEY, skip=True)
    test, adapt = split_speaker(job["speaker"], job["test_seconds"], job["adapt_seconds"], bad, seconds_of)
    return {"kind": "check_speaker", "test": test, "adapt": adapt, "bad": bad.found}


def _job_check_place(job: dict) -> dict:
    """Decode a noise place's recordings in order until ``seconds`` of good audio; bad ones passed over."""
    from fedpse.world.corpora import BadFiles, load_noise, take_files

    place = job["place"]
    durations = {str(Path(f)): d for f, d in zip(place["files"], place["durations"], strict=True)}

    def seconds_of(path: Path) -> float:
        load_noise(path, job["min_rms_dbfs"])
        return durations[str(path)]

    bad = BadFiles(NOISE_SKIP_KEY, skip=True)
    _, complete = take_files(place["files"], [job["seconds"]], seconds_of, bad)
    return {"kind": "check_place", "complete": complete, "bad": bad.found}


def _write_skipped(path: Path, rows: list[tuple[str, str]]) -> None:
    """``skipped_files.csv`` (path,reason), and one line on stderr saying how many and where."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        writer.writerows(rows)
    if rows:
        print(
            f"fedpse: world build skipped {len(rows)} bad audio file(s)/place(s); listed in {path}",
            file=sys.stderr,
        )
