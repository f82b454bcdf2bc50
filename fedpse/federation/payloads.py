"""What travels in Flower messages: model weights, pseudo-targets and uploaded audio, encoded as sent.

Every payload is a Flower ``ArrayRecord``; its ``count_bytes()`` is what the ledger charges. Encodings:

- weights / targets at ``fp32``, ``fp16`` or ``int8``. ``int8`` is symmetric per-tensor (per-chunk for audio)
  quantisation: the int8 array travels under its own name and its float32 scale under ``<name>@scale``.
  Integer tensors (e.g. counters in a state dict) always travel as they are.
- uploaded audio as ``flac`` (lossless 16-bit FLAC) or ``lossy`` (Ogg Opus at a configurable compression level).
  The encoded file travels as the Array's bytes; the Array's ``shape`` holds the sample count and its ``stype``
  names the codec, so the receiver restores the exact length and the ledger knows the seconds of audio inside.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from fedpse.audio.io import SAMPLE_RATE, decode_audio, encode_flac

PRECISIONS = ("fp32", "fp16", "int8")
AUDIO_STYPES = {"flac": "audio/flac", "lossy": "audio/ogg-opus"}
SCALE_SUFFIX = "@scale"


class PayloadError(ValueError):
    """A received record that cannot be decoded: names the record entry and what was expected."""


def content_bytes(content: RecordDict) -> int:
    """Bytes of everything in a message's content, as Flower counts them (``count_bytes`` of every record)."""
    return int(sum(record.count_bytes() for record in content.values()))


def describe_payload(content: RecordDict) -> dict:
    """What a message actually carries, read from its arrays: ``precision`` of weights/targets, ``codec`` of
    audio uploads and ``audio_seconds`` of raw audio inside (empty / 0 when there is none)."""
    precisions, codecs, seconds = set(), set(), 0.0
    for record in content.array_records.values():
        if any(arr.stype in AUDIO_STYPES.values() for arr in record.values()):
            codecs.add(audio_codec(record))
            seconds += audio_seconds(record)
        elif len(record):
            precisions.add(record_precision(record))
    return {
        "precision": "+".join(sorted(precisions)),
        "codec": "+".join(sorted(codecs)),
        "audio_seconds": seconds,
    }


# ------------------------------------------------------------------------------------------ float arrays
def _encode_float(name: str, value: np.ndarray, precision: str) -> dict[str, Array]:
    value = np.asarray(value, dtype=np.float32)
    if precision == "fp32":
        return {name: Array(np.ascontiguousarray(value))}
    if precision == "fp16":
        return {name: Array(np.ascontiguousarray(value.astype(np.float16)))}
    if precision == "int8":
        peak = float(np.max(np.abs(value))) if value.size else 0.0
        scale = peak / 127.0 if peak > 0 else 1.0
        q = np.clip(np.round(value / scale), -127, 127).astype(np.int8)
        return {name: Array(q), name + SCALE_SUFFIX: Array(np.array([scale], dtype=np.float32))}
    raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")


def _decode_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    out = {}
    for name, arr in record.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        try:
            value = arr.numpy()
        except (TypeError, ValueError) as err:
            raise PayloadError(f"array {name!r}: cannot decode ({err})") from None
        if value.dtype == np.int8 and name + SCALE_SUFFIX in record:
            scale = float(record[name + SCALE_SUFFIX].numpy()[0])
            value = value.astype(np.float32) * scale
        elif np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float32)
        out[name] = value
    return out


def record_precision(record: ArrayRecord) -> str:
    """The precision a record was sent at, read from the arrays themselves."""
    dtypes = {arr.dtype for name, arr in record.items() if not name.endswith(SCALE_SUFFIX)}
    for precision, dtype in (("int8", "int8"), ("fp16", "float16"), ("fp32", "float32")):
        if dtype in dtypes:
            return precision
    return "+".join(sorted(dtypes))


# ------------------------------------------------------------------------------------------ model files
def encode_files(files: dict[str, bytes]) -> ArrayRecord:
    """Files (an ONNX teacher's graphs) as they are on disk: one uint8 array of each file's bytes."""
    return ArrayRecord(
        {name: Array(np.frombuffer(data, dtype=np.uint8).copy()) for name, data in files.items()}
    )


def decode_files(record: ArrayRecord) -> dict[str, bytes]:
    """The files ``encode_files`` sent, by name."""
    out = {}
    for name, arr in record.items():
        value = arr.numpy()
        if value.dtype != np.uint8 or value.ndim != 1:
            raise PayloadError(
                f"file {name!r}: expected a 1-D uint8 array of its bytes, got {value.dtype} {value.shape}"
            )
        out[name] = value.tobytes()
    return out


# ------------------------------------------------------------------------------------------ model weights
def encode_weights(state_dict: dict[str, torch.Tensor], precision: str) -> ArrayRecord:
    """A model's ``state_dict`` as an ArrayRecord at ``precision`` (integer tensors kept exact)."""
    arrays: dict[str, Array] = {}
    for name, tensor in state_dict.items():
        value = tensor.detach().cpu().numpy()
        if np.issubdtype(value.dtype, np.floating):
            arrays.update(_encode_float(name, value, precision))
        else:
            arrays[name] = Array(np.ascontiguousarray(value))
    return ArrayRecord(arrays)


def decode_weights(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Inverse of ``encode_weights``: float tensors come back as float32."""
    return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in _decode_arrays(record).items()}


# ------------------------------------------------------------------------------------------ pseudo-targets
def encode_targets(targets: dict[str, np.ndarray], precision: str) -> ArrayRecord:
    """Pseudo-target waveforms by chunk name at ``precision``."""
    arrays: dict[str, Array] = {}
    for name, audio in targets.items():
        arrays.update(_encode_float(name, audio, precision))
    return ArrayRecord(arrays)


def decode_targets(record: ArrayRecord) -> dict[str, np.ndarray]:
    out = _decode_arrays(record)
    for name, value in out.items():
        if value.ndim != 1:
            raise PayloadError(f"target {name!r}: expected a 1-D waveform, got shape {value.shape}")
    return out


# ------------------------------------------------------------------------------------------ audio uploads
def encode_audio(chunks: dict[str, np.ndarray], codec: str, lossy_compression: float = 0.5) -> ArrayRecord:
    """Noisy chunks by name, each as an encoded file (FLAC or Ogg Opus) inside one Array."""
    if codec not in AUDIO_STYPES:
        raise ValueError(f"codec: expected one of {sorted(AUDIO_STYPES)}, got {codec!r}")
    arrays = {}
    for name, audio in chunks.items():
        audio = np.asarray(audio, dtype=np.float32)
        if codec == "flac":
            blob = encode_flac(audio)
        else:
            buf = io.BytesIO()
            sf.write(
                buf,
                np.clip(audio, -1.0, 1.0),
                SAMPLE_RATE,
                format="OGG",
                subtype="OPUS",
                compression_level=lossy_compression,
            )
            blob = buf.getvalue()
        arrays[name] = Array(dtype="float32", shape=(len(audio),), stype=AUDIO_STYPES[codec], data=blob)
    return ArrayRecord(arrays)


def audio_codec(record: ArrayRecord) -> str:
    """``flac`` / ``lossy`` as actually sent (from the arrays' stype)."""
    by_stype = {v: k for k, v in AUDIO_STYPES.items()}
    codecs = {by_stype.get(arr.stype, arr.stype) for arr in record.values()}
    return "+".join(sorted(codecs))


def audio_seconds(record: ArrayRecord) -> float:
    """Seconds of raw audio inside an upload record (from the sample counts that travel with it)."""
    return float(
        sum(arr.shape[0] for arr in record.values() if arr.stype in AUDIO_STYPES.values()) / SAMPLE_RATE
    )


def decode_audio_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Inverse of ``encode_audio``; each chunk comes back with exactly its original sample count."""
    out = {}
    for name, arr in record.items():
        if arr.stype not in AUDIO_STYPES.values():
            raise PayloadError(f"upload {name!r}: expected an encoded audio file, got stype {arr.stype!r}")
        audio = decode_audio(arr.data, name=f"upload {name}")
        n = int(arr.shape[0])
        audio = audio[:n] if len(audio) >= n else np.pad(audio, (0, n - len(audio)))
        out[name] = audio.astype(np.float32, copy=False)
    return out


# ------------------------------------------------------------------------------------------ guard decision
def guard_metrics(columns: dict) -> dict[str, float]:
    """The personalization guard's decision and scores (``AdaptResult.guard_columns()``) as the numbers a device's
    MetricRecord can carry (``guard_adopted`` 1 / 0); empty when the guard is off."""
    if not columns:
        return {}
    return {
        "guard_adopted": float(columns["guard_decision"] == "adopted"),
        "guard_generic_db": float(columns["guard_generic_db"]),
        "guard_personalized_db": float(columns["guard_personalized_db"]),
        "guard_teacher_lead_db": float(columns["guard_teacher_lead_db"]),
        "guard_macs": float(columns["guard_macs"]),
    }


def guard_columns(metrics: dict) -> dict:
    """Inverse of ``guard_metrics``: the guard's columns of an attempt (empty when the reply has none)."""
    if "guard_adopted" not in metrics:
        return {}
    return {
        "guard_decision": "adopted" if metrics["guard_adopted"] else "kept_generic",
        "guard_generic_db": float(metrics["guard_generic_db"]),
        "guard_personalized_db": float(metrics["guard_personalized_db"]),
        "guard_teacher_lead_db": float(metrics["guard_teacher_lead_db"]),
        "guard_macs": float(metrics["guard_macs"]),
    }


def teacher_check_task(check) -> dict[str, float]:
    """A ``distill.guard.TeacherCheck`` made on the server as fields of the device's task (none for None)."""
    if check is None:
        return {}
    return {"guard_generic_db": float(check.generic_score), "guard_teacher_db": float(check.teacher_score)}
