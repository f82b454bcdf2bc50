"""Any user-supplied ONNX denoiser as a KD teacher (inference only, CPU, onnxruntime).

The model takes a waveform at its own sample rate and returns the enhanced waveform. Three framings:

- ``whole``: the whole utterance in one call; the model's time axis must be dynamic.
- ``chunk``: fixed-length chunks (the model's fixed time length, or ``chunk_seconds``) every ``hop_seconds``, the
  outputs Hann-windowed and overlap-added with the window sum normalised to one (``hop == chunk``: plain
  concatenation, no window). The signal is zero-padded so every sample sees full overlap.
- ``stateful``: a streaming model with extra state inputs/outputs (DTLN-like): blocks of ``block_samples`` every
  ``shift_samples`` (model-rate samples), states start at zero and each state output is fed back to its state input
  (paired by name, e.g. ``h_in``/``h_out``, else by position); output blocks are overlap-added without a window (as
  in DTLN) and the ``block - shift`` latency is compensated so the output is time-aligned. Multi-stage models
  (DTLN ships two ONNX files with an FFT in between) are out of scope.

Audio arrives at 16 kHz; it is resampled (``scipy.signal.resample_poly``) to the model's sample rate (argument, else
the ONNX metadata key ``sample_rate``, else 16 kHz) and back, and returned with the input's length.
Accepted input layouts: ``[T]``, ``[batch, T]``, ``[batch, 1, T]`` (time last; other axes 1 or dynamic).
"""

from __future__ import annotations

import hashlib
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly
from torch import Tensor, nn

SAMPLE_RATE = 16000
FRAMINGS = ("whole", "chunk", "stateful")
DEFAULT_CHUNK_SECONDS = 4.0
_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
_STATE_WORDS = {
    "in",
    "out",
    "input",
    "output",
    "inputs",
    "outputs",
    "next",
    "new",
    "prev",
    "previous",
    "old",
    "init",
}


class OnnxTeacherError(ValueError):
    """An ONNX teacher that cannot be used as configured: names the file and what was expected."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class OnnxTeacher:
    """A user's ONNX denoiser. ``enhance(wave[T] or [B, T] at 16 kHz) -> same shape, float32``."""

    def __init__(
        self,
        path: str | Path,
        sample_rate: int | None = None,
        framing: str = "whole",
        chunk_seconds: float | None = None,
        hop_seconds: float | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
        block_samples: int | None = None,
        shift_samples: int | None = None,
        num_threads: int = 1,
    ):
        # Every option but the path and the thread count changes the outputs: kept for the result-cache fingerprint
        # (taken from the signature, so an option added later is covered too).
        self.options = {k: v for k, v in locals().items() if k not in ("self", "path", "num_threads")}
        self.path = Path(path)
        if framing not in FRAMINGS:
            raise OnnxTeacherError(self.path, f"unknown framing {framing!r}; expected one of {FRAMINGS}")
        self.framing = framing
        self._macs: dict[str, float] | None = None
        self.session = _open_session(self.path, num_threads)
        # The bytes the session was built from (not the file as it may be later), for the result-cache key.
        with open(self.path, "rb") as fh:
            self.file_sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        self.sample_rate = int(sample_rate or self._metadata_sample_rate() or SAMPLE_RATE)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        self._input = self._pick_input(inputs, input_name, block_samples)
        self._output = self._pick_output(outputs, output_name)
        self._dtype = self._input_dtype(self._input)
        self._time_length = _fixed(self._input.shape[-1]) if self._input.shape else None
        if framing == "whole":
            self._setup_whole()
        elif framing == "chunk":
            self._setup_chunk(chunk_seconds, hop_seconds)
        else:
            self._setup_stateful(inputs, outputs, block_samples, shift_samples)

    # ----------------------------------------------------------------------------------------------- public
    def enhance(self, wave: np.ndarray) -> np.ndarray:
        """Enhance 16 kHz audio. wave: [T] or [B, T] -> float32 of the same shape."""
        return enhance_at_rate(wave, self.sample_rate, self._run, type(self).__name__)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.framing == "whole":
            return self._run_batch(x)
        if self.framing == "chunk":
            return self._run_chunked(x)
        return np.stack([self._run_stateful(row) for row in x])

    __call__ = enhance

    def as_torch_teacher(self) -> TorchOnnxTeacher:
        """A parameter-free ``nn.Module`` running this teacher without gradients on tensors."""
        return TorchOnnxTeacher(self)

    @property
    def files(self) -> list[Path]:
        return [self.path]

    def param_count(self) -> int:
        """Numbers stored in the graph's initializers."""
        return onnx_param_count(self.path)

    def describe(self) -> dict:
        """JSON-friendly description for model cards and ledgers."""
        return {
            "arch": "onnx",
            "path": str(self.path),
            "sample_rate": self.sample_rate,
            "framing": self.framing,
            "input": {"name": self._input.name, "shape": list(self._input.shape)},
            "output": {"name": self._output.name, "shape": list(self._output.shape)},
        }

    def identity(self) -> dict:
        """What determines this teacher's outputs besides its input: the file's SHA-256, the options it was built
        with and what it resolved from them and the file (``fedpse.models.identity.model_fingerprint``)."""
        framing = {k: getattr(self, f"_{k}", None) for k in ("chunk", "hop", "block", "shift")}
        return {
            "file_sha256": self.file_sha256,
            "options": self.options,
            "resolved": {**self.describe(), "path": None, **framing},
        }

    def macs_breakdown(self) -> dict[str, float]:
        """Forward multiply-accumulates per second of audio, by ONNX op type, counted from the graph.

        One model call is shape-inferred at this teacher's framing (``whole``: one second; ``chunk``: one chunk,
        ``sample_rate / hop`` calls per second; ``stateful``: one block with its states, ``sample_rate / shift``
        calls per second) and its dense ops are counted by ``onnx_graph_macs``. Resampling is not counted. Raises
        ``ValueError`` when the graph cannot be counted (the ledger then records the teacher's MACs as unknown).
        """
        if self._macs is None:
            if self.framing == "whole":
                length, calls = self.sample_rate, 1.0
            elif self.framing == "chunk":
                length, calls = self._chunk, self.sample_rate / self._hop
            else:
                length, calls = self._block, self.sample_rate / self._shift
            rank = len(self._input.shape)
            batch = (_fixed(self._input.shape[0]) or 1) if rank >= 2 else 1
            shapes = {self._input.name: [length] if rank == 1 else [batch] + [1] * (rank - 2) + [length]}
            if self.framing == "stateful":
                shapes.update({name: list(v.shape) for name, v in self._state_init.items()})
            per_call = onnx_graph_macs(self.path, shapes)
            self._macs = {op: macs * calls / batch for op, macs in per_call.items()}
        return dict(self._macs)

    # ------------------------------------------------------------------------------------------------ setup
    def _fail(self, reason: str) -> OnnxTeacherError:
        return OnnxTeacherError(self.path, reason)

    def _metadata_sample_rate(self) -> int | None:
        value = self.session.get_modelmeta().custom_metadata_map.get("sample_rate")
        try:
            return int(value) if value else None
        except ValueError:
            raise self._fail(f"ONNX metadata sample_rate={value!r} is not an integer") from None

    def _pick_input(self, inputs: dict, name: str | None, block_samples: int | None):
        listing = _listing(inputs.values())
        if name is not None:
            if name not in inputs:
                raise self._fail(f"model has no input {name!r}; its inputs are {listing}")
            return inputs[name]
        if self.framing != "stateful":
            if len(inputs) != 1:
                raise self._fail(
                    f"model has {len(inputs)} inputs {listing}; framing={self.framing!r} needs exactly one waveform "
                    "input (set teacher.onnx.input_name to one of them, or framing='stateful' for a streaming model with "
                    "state inputs)"
                )
            return next(iter(inputs.values()))
        if block_samples is not None:
            matching = [
                i for i in inputs.values() if _fixed(i.shape[-1] if i.shape else None) == block_samples
            ]
            if len(matching) == 1:
                return matching[0]
        return next(iter(inputs.values()))

    def _pick_output(self, outputs: dict, name: str | None):
        if name is not None:
            if name not in outputs:
                raise self._fail(
                    f"model has no output {name!r}; its outputs are {_listing(outputs.values())}"
                )
            return outputs[name]
        same = [o for o in outputs.values() if list(o.shape) == list(self._input.shape)]
        return same[0] if same else next(iter(outputs.values()))

    def _input_dtype(self, arg) -> type:
        if arg.type not in _DTYPES:
            raise self._fail(f"input {arg.name!r} has type {arg.type}; expected a float tensor")
        return _DTYPES[arg.type]

    def _check_layout(self, expected: str) -> None:
        shape = list(self._input.shape)
        lead = [_fixed(d) for d in shape[:-1]]
        if 1 <= len(shape) <= 3 and all(d in (None, 1) for d in lead) and (len(shape) < 3 or lead[1] == 1):
            return
        last = _fixed(shape[-1]) if shape else None
        hint = ""
        if len(shape) >= 3 and last:
            hint = (
                f"; if its last axis holds the {last} bins of a spectral model, describe it with "
                f"teacher.onnx.framing='spectral', teacher.onnx.stft.n_fft={2 * (last - 1)} and teacher.onnx.stages "
                "(docs/models.md)"
            )
        raise self._fail(
            f"input {self._input.name!r} has shape {shape}; framing={self.framing!r} expects {expected}: a mono "
            f"waveform with time last, [T], [batch, T] or [batch, 1, T] (axis 1 of three is a channel, fixed at 1)"
            + hint
        )

    def _setup_whole(self) -> None:
        self._check_layout("[batch, time] with a dynamic time axis")
        if self._time_length is not None:
            seconds = self._time_length / self.sample_rate
            raise self._fail(
                f"input {self._input.name!r} has shape {list(self._input.shape)} (fixed time length "
                f"{self._time_length} samples), but framing='whole' needs a dynamic time axis; set "
                f"teacher.onnx.framing='chunk' (teacher.onnx.chunk_seconds={seconds:g}) or 'stateful' for a "
                "streaming model"
            )

    def _setup_chunk(self, chunk_seconds: float | None, hop_seconds: float | None) -> None:
        self._check_layout("[batch, chunk] with a fixed or dynamic chunk length")
        if self._time_length is not None:
            chunk = self._time_length
            if chunk_seconds is not None and round(chunk_seconds * self.sample_rate) != chunk:
                raise self._fail(
                    f"input {self._input.name!r} has shape {list(self._input.shape)} (chunks of {chunk} samples = "
                    f"{chunk / self.sample_rate:g} s) but chunk_seconds={chunk_seconds} was given"
                )
        else:
            chunk = round((chunk_seconds or DEFAULT_CHUNK_SECONDS) * self.sample_rate)
        hop = chunk // 2 if hop_seconds is None else round(hop_seconds * self.sample_rate)
        if chunk < 2 or not (1 <= hop <= chunk // 2 or hop == chunk):
            raise self._fail(
                f"chunk of {chunk} samples with hop {hop}: the hop must be in [1, chunk/2] (Hann overlap-add) "
                "or equal to the chunk (no overlap)"
            )
        self._chunk, self._hop = chunk, hop
        if hop == chunk:
            self._window = np.ones(chunk)
        else:
            self._window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(chunk) / chunk)  # periodic Hann

    def _setup_stateful(self, inputs: dict, outputs: dict, block: int | None, shift: int | None) -> None:
        self._check_layout("[batch, block] plus state inputs")
        if self._time_length is None and block is None:
            raise self._fail(
                f"input {self._input.name!r} has a dynamic time axis {list(self._input.shape)}; set teacher.onnx.block_samples"
            )
        if self._time_length is not None and block is not None and block != self._time_length:
            raise self._fail(
                f"input {self._input.name!r} has shape {list(self._input.shape)} (blocks of {self._time_length} "
                f"samples) but block_samples={block} was given"
            )
        block = block or self._time_length
        if shift is None or not 1 <= shift <= block:
            raise self._fail(
                f"framing='stateful' needs shift_samples in [1, block_samples={block}], got {shift!r}"
            )
        self._block, self._shift = block, shift
        state_in = [i for n, i in inputs.items() if n != self._input.name]
        state_out = [o for n, o in outputs.items() if n != self._output.name]
        if len(state_in) != len(state_out):
            raise self._fail(
                f"stateful model has {len(state_in)} state inputs {_listing(state_in)} but {len(state_out)} state "
                f"outputs {_listing(state_out)} besides the audio ({self._input.name!r} -> {self._output.name!r})"
            )
        self._state_pairs = _pair_states(state_in, state_out)
        self._state_init = {}
        for arg, _out in self._state_pairs:
            shape = [
                1 if (d is None or isinstance(d, str)) and k == 0 else d for k, d in enumerate(arg.shape)
            ]
            if any(_fixed(d) is None for d in shape):
                raise self._fail(
                    f"state input {arg.name!r} has shape {list(arg.shape)}; states need a fixed shape"
                )
            self._state_init[arg.name] = np.zeros(shape, dtype=self._input_dtype(arg))

    # -------------------------------------------------------------------------------------------------- run
    def _feed(self, x: np.ndarray) -> np.ndarray:
        """[n, t] -> the model's input layout."""
        rank = len(self._input.shape)
        x = x.astype(self._dtype)
        return x[0] if rank == 1 else (x if rank == 2 else x[:, None, :])

    def _call(self, x: np.ndarray, extra: dict | None = None) -> list[np.ndarray]:
        try:
            return self.session.run(None, {self._input.name: self._feed(x), **(extra or {})})
        except Exception as err:  # onnxruntime raises its own exception types
            raise self._fail(f"onnxruntime failed on input of shape {list(x.shape)}: {err}") from None

    def _output_index(self) -> int:
        return [o.name for o in self.session.get_outputs()].index(self._output.name)

    def _run_batch(self, x: np.ndarray) -> np.ndarray:
        """[n, t] -> [n, t]: one call when the batch axis is dynamic, else one call per row."""
        rank = len(self._input.shape)
        if rank >= 2 and _fixed(self._input.shape[0]) is None:
            return self._as_waves(self._call(x)[self._output_index()], x.shape[0], x.shape[1])
        return np.concatenate(
            [self._as_waves(self._call(row[None])[self._output_index()], 1, x.shape[1]) for row in x]
        )

    def _as_waves(self, y: np.ndarray, n: int, length: int) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if y.size % n or (y.ndim >= 1 and n > 1 and y.shape[0] != n):
            raise self._fail(
                f"output {self._output.name!r} has shape {list(y.shape)}; expected {n} waveform(s)"
            )
        y = y.reshape(n, -1)
        if y.shape[1] != length and (y.shape[1] >= 2 * length or y.shape[1] < length // 2):
            raise self._fail(
                f"output {self._output.name!r} has shape {list(y.shape)} for {length} input samples; expected one "
                "waveform of (about) the input length (a multi-source output? set teacher.onnx.output_name)"
            )
        return _fit_length(y, length)

    def _run_chunked(self, x: np.ndarray) -> np.ndarray:
        chunk, hop = self._chunk, self._hop
        n, length = x.shape
        pad = chunk - hop
        count = max(1, math.ceil((length + 2 * pad - chunk) / hop) + 1)
        total = (count - 1) * hop + chunk
        padded = np.zeros((n, total))
        padded[:, pad : pad + length] = x
        starts = range(0, total - chunk + 1, hop)
        chunks = np.stack([padded[:, s : s + chunk] for s in starts], axis=1)  # [n, count, chunk]
        outs = self._run_batch(chunks.reshape(-1, chunk)).reshape(n, len(starts), chunk)
        out = np.zeros((n, total))
        weight = np.zeros(total)
        for k, s in enumerate(starts):
            out[:, s : s + chunk] += outs[:, k] * self._window
            weight[s : s + chunk] += self._window
        return out[:, pad : pad + length] / np.maximum(weight[pad : pad + length], 1e-8)

    def _run_stateful(self, x: np.ndarray) -> np.ndarray:
        block, shift = self._block, self._shift
        # A streaming model emits a block's oldest `shift` samples once they are complete, `block - shift` samples
        # late: pad that much in front (the zero-filled initial buffer) and behind (the flush), then drop the delay.
        delay = block - shift
        count = max(1, math.ceil((x.shape[0] + 2 * delay - block) / shift) + 1)
        total = (count - 1) * shift + block
        padded = np.zeros(total)
        padded[delay : delay + x.shape[0]] = x
        out = np.zeros(total)
        states = dict(self._state_init)
        names = [o.name for o in self.session.get_outputs()]
        for k in range(count):
            start = k * shift
            results = dict(zip(names, self._call(padded[None, start : start + block], states), strict=True))
            out[start : start + block] += self._as_waves(results[self._output.name], 1, block)[0]
            states = {
                arg.name: results[o.name].astype(self._state_init[arg.name].dtype)
                for arg, o in self._state_pairs
            }
        return out[delay : delay + x.shape[0]]


class TorchOnnxTeacher(nn.Module):
    """Torch-facing wrapper: ``forward(wave[B, T] or [T]) -> Tensor`` on the input's device/dtype, no gradients."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher
        self.config: dict | None = None  # the ``teacher.onnx`` config block, when loaded from a config (zoo)

    def macs_breakdown(self, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
        """Forward MACs per second of audio by op type (``OnnxTeacher.macs_breakdown``)."""
        return self.teacher.macs_breakdown()

    def param_count(self) -> int:
        """Numbers in the ONNX graphs' initializers: what the teacher holds, though nothing here is trainable."""
        return self.teacher.param_count()

    @torch.no_grad()
    def forward(self, wave: Tensor) -> Tensor:
        out = self.teacher.enhance(wave.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(out).to(device=wave.device, dtype=wave.dtype)


# ------------------------------------------------------------------------------------------------ MAC counts
_MATMULS = ("MatMul", "MatMulInteger", "QLinearMatMul")
_CONVS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}  # op -> index of the weight input
_RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_UNCOUNTABLE = ("Einsum", "Loop", "Scan", "If")
_COUNTED = {*_MATMULS, *_CONVS, *_RECURRENT_GATES, "Gemm", "ConvTranspose"}  # every other op: not a dense op


def onnx_graph_macs(path: str | Path, input_shapes: dict[str, list[int]]) -> dict[str, float]:
    """MACs of one call of the ONNX model at ``path`` with the given concrete input shapes, by op type.

    Same convention as ``fedpse.models.macs``: every weight multiply of a dense op is one MAC (MatMul, Gemm, Conv,
    ConvTranspose, LSTM/GRU/RNN gate matmuls); elementwise ops, normalisation, nonlinearities and FFT ops are not
    counted. Shapes come from ONNX shape inference with data propagation. A dense op whose shapes stay unknown, or a
    graph with control flow or Einsum, raises ``ValueError`` naming the file and the nodes.
    """
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        raise ValueError(
            "counting an ONNX teacher's MACs needs the onnx package: pip install 'fedpse[onnx]'"
        ) from None
    model = onnx.load(str(path))
    for arg in model.graph.input:
        if arg.name not in input_shapes:
            continue
        dims, want = arg.type.tensor_type.shape.dim, input_shapes[arg.name]
        if len(dims) != len(want):
            raise ValueError(f"{path}: input {arg.name!r} has rank {len(dims)}, counted with shape {want}")
        for dim, size in zip(dims, want, strict=True):
            dim.Clear()
            dim.dim_value = int(size)
    try:
        graph = shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception as err:  # onnx raises its own inference errors
        raise ValueError(f"{path}: ONNX shape inference failed ({type(err).__name__}: {err})") from None
    shapes: dict[str, list[int | None]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        shapes[info.name] = [
            d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim
        ]
    shapes.update({init.name: list(init.dims) for init in graph.initializer})
    for node in graph.node:
        if (
            node.op_type == "Constant"
            and node.attribute
            and node.attribute[0].type == onnx.AttributeProto.TENSOR
        ):
            shapes[node.output[0]] = list(node.attribute[0].t.dims)
    totals: dict[str, float] = {}
    unknown: list[str] = []
    for node in graph.node:
        try:
            macs = _node_macs(node, shapes)
        except _Unknown:
            unknown.append(f"{node.op_type} {node.name!r}")
            continue
        if macs:
            totals[node.op_type] = totals.get(node.op_type, 0.0) + float(macs)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ValueError(
            f"{path}: cannot count the MACs of {shown} (tensor shapes unknown or op not countable)"
        )
    return totals


class _Unknown(Exception):
    pass


def _node_macs(node, shapes: dict) -> float:
    op = node.op_type
    if op in _UNCOUNTABLE:
        raise _Unknown
    if op not in _COUNTED:
        return 0.0

    def shape(name: str) -> list[int]:
        dims = shapes.get(name)
        if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
            raise _Unknown
        return dims

    attrs = {a.name: a for a in node.attribute}
    if op in _MATMULS:
        a = shape(node.input[0])
        return math.prod(shape(node.output[0])) * a[-1]
    if op == "Gemm":
        a = shape(node.input[0])
        k = a[0] if "transA" in attrs and attrs["transA"].i else a[1]
        return math.prod(shape(node.output[0])) * k
    if op in _CONVS:
        weight = shape(node.input[_CONVS[op]])  # [C_out, C_in / group, *kernel]
        return math.prod(shape(node.output[0])) * math.prod(weight[1:])
    if op == "ConvTranspose":
        weight = shape(node.input[1])  # [C_in, C_out / group, *kernel]
        return math.prod(shape(node.input[0])) * math.prod(weight[1:])
    x = shape(node.input[0])  # recurrent: [seq, batch, input] (layout 0) or [batch, seq, input] (layout 1)
    hidden = attrs["hidden_size"].i
    directions = 2 if "direction" in attrs and attrs["direction"].s == b"bidirectional" else 1
    return x[0] * x[1] * directions * _RECURRENT_GATES[op] * (x[2] * hidden + hidden * hidden)


# ---------------------------------------------------------------------------------------------------- helpers
def _open_session(path: Path, num_threads: int):
    if not path.is_file():
        raise OnnxTeacherError(path, "ONNX teacher file not found")
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("OnnxTeacher needs onnxruntime: pip install 'fedpse[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # InvalidProtobuf, Fail, ... (onnxruntime's own types)
        raise OnnxTeacherError(path, f"not a loadable ONNX model ({type(err).__name__}: {err})") from None


def enhance_at_rate(wave: np.ndarray, sample_rate: int, run, name: str) -> np.ndarray:
    """Check ``wave`` ([T] or [B, T] at 16 kHz), resample it to ``sample_rate``, ``run([n, t]) -> [n, t']`` and
    bring the result back to 16 kHz and the input's shape, as float32."""
    wave = np.asarray(wave)
    if wave.ndim not in (1, 2) or wave.shape[-1] == 0:
        raise ValueError(f"{name}.enhance expects a non-empty wave of shape [T] or [B, T], got {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise ValueError(f"{name}.enhance got NaN or inf samples")
    batch = wave.reshape(-1, wave.shape[-1]).astype(np.float64)
    y = run(_resample(batch, SAMPLE_RATE, sample_rate))
    y = _fit_length(_resample(y, sample_rate, SAMPLE_RATE), batch.shape[-1])
    return y.astype(np.float32).reshape(wave.shape)


def onnx_param_count(path: str | Path) -> int:
    """Numbers stored in an ONNX graph's initializers (its weights), read without running it."""
    try:
        import onnx
    except ImportError:
        raise ValueError(
            "counting an ONNX teacher's parameters needs the onnx package: pip install 'fedpse[onnx]'"
        ) from None
    graph = onnx.load(str(path), load_external_data=False).graph
    return int(sum(math.prod(t.dims) for t in graph.initializer))


def _fixed(dim) -> int | None:
    """A dimension's fixed size, or None when symbolic/dynamic."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _listing(args) -> list[str]:
    return [f"{a.name}{list(a.shape)}" for a in args]


def _state_key(name: str) -> str:
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in _STATE_WORDS]
    return "_".join(words)


def _pair_states(state_in: list, state_out: list) -> list[tuple]:
    """Pair each state input with the output fed back to it: by name (``h_in``/``h_out``) else by position."""
    keys_in = [_state_key(a.name) for a in state_in]
    keys_out = [_state_key(o.name) for o in state_out]
    if len(set(keys_in)) == len(keys_in) and sorted(keys_in) == sorted(keys_out):
        by_key = dict(zip(keys_out, state_out, strict=True))
        return [(a, by_key[k]) for a, k in zip(state_in, keys_in, strict=True)]
    return list(zip(state_in, state_out, strict=True))


def _resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return x
    ratio = Fraction(to_rate, from_rate).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


def _fit_length(y: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad the last axis to ``length``."""
    if y.shape[-1] >= length:
        return y[..., :length]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])
