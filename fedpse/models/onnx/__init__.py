"""ONNX teachers beyond the waveform-in/waveform-out graph: STFT framing, chains of stages, installed presets.

``build_onnx_teacher(block)`` turns a ``teacher.onnx`` config block (a dict) into a teacher: a preset is resolved
to its files in the installed package (``presets.py``), ``framing=spectral`` runs ``stages`` on STFT frames
(``chain.py``, ``framing.py``), any other framing is a waveform model (``fedpse.models.onnx_teacher``).
"""

from fedpse.models.onnx.build import build_onnx_teacher, onnx_files, resolve_block, with_files_in

__all__ = ["build_onnx_teacher", "onnx_files", "resolve_block", "with_files_in"]
