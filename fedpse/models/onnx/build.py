"""A ``teacher.onnx`` block (a dict) -> an ONNX teacher; its files, and the block re-pointed at copies of them."""

from __future__ import annotations

import copy
from pathlib import Path

from fedpse.models.onnx.chain import SpectralTeacher
from fedpse.models.onnx.presets import preset_block
from fedpse.models.onnx_teacher import OnnxTeacher

_WAVEFORM_KEYS = (
    "sample_rate",
    "framing",
    "chunk_seconds",
    "hop_seconds",
    "block_samples",
    "shift_samples",
    "input_name",
    "output_name",
)


def resolve_block(block: dict) -> dict:
    """A preset filled in from the installed package (its files located, its framing written out); else as given."""
    return preset_block(block["preset"]) if block.get("preset") else block


def build_onnx_teacher(block: dict, num_threads: int = 1) -> OnnxTeacher | SpectralTeacher:
    """The teacher a resolved ``teacher.onnx`` block describes (``resolve_block`` first for a preset)."""
    if block.get("framing") == "spectral":
        return SpectralTeacher(block, num_threads)
    kwargs = {k: block[k] for k in _WAVEFORM_KEYS if k in block}
    return OnnxTeacher(block["path"], num_threads=num_threads, **kwargs)


def onnx_files(block: dict) -> list[Path]:
    """Every model file of a resolved block, in stage order."""
    if block.get("framing") == "spectral":
        return [Path(stage["path"]) for stage in block["stages"]]
    return [Path(block["path"])]


def with_files_in(block: dict, directory: Path, names: list[str]) -> dict:
    """``block`` with its model files replaced by ``directory/names[k]`` (a device's cached copies)."""
    block = copy.deepcopy(block)
    paths = [str(directory / name) for name in names]
    if block.get("framing") == "spectral":
        for stage, path in zip(block["stages"], paths, strict=True):
            stage["path"] = path
    else:
        (block["path"],) = paths
    return block
