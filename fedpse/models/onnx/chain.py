"""A spectral ONNX teacher: STFT frames through one or more ONNX stages (a chain), overlap-added back to audio.

Each stage sees every frame either as its spectrum (``domain: spectral``: a feature of it in, a mask, complex mask
or complex spectrum out) or as its waveform (``domain: time``: a frame in, a frame out); between stages the frame is
moved to the next stage's domain by an rFFT / irFFT. NSNet2 is one spectral stage run on the whole sequence; DTLN a
spectral stage then a time stage, both stateful per frame.

Vectorized where the graph allows it: a stage whose frames axis is dynamic gets the whole sequence in one call; a
stateless per-frame stage with a dynamic batch axis gets every frame of every utterance in one call; only a stateful
per-frame stage is called frame by frame (its states carried from each frame to the next, stage by stage, which gives
the same outputs as interleaving the stages block by block) — with every utterance of the call in each frame's call,
where the graph takes several rows (``batching.rows_session``: a batch axis fixed at 1 is relaxed when a check shows
that gives the same outputs).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from fedpse.models.onnx.batching import rows_session
from fedpse.models.onnx.framing import StftFraming
from fedpse.models.onnx_teacher import (
    _DTYPES,
    SAMPLE_RATE,
    OnnxTeacherError,
    TorchOnnxTeacher,
    _fixed,
    _listing,
    _open_session,
    _pair_states,
    _state_key,
    enhance_at_rate,
    onnx_graph_macs,
    onnx_param_count,
)

_FLOATS = _DTYPES  # the ONNX float types a stage may take, as numpy dtypes


class OnnxStage:
    """One ONNX model of a chain, with the axes of its input checked against the STFT framing."""

    def __init__(self, spec: dict, index: int, stft: StftFraming, num_threads: int = 1):
        self.key = f"teacher.onnx.stages[{index}]"
        self.path = Path(spec["path"])
        self.domain = spec.get("domain", "spectral")
        self.feature = spec.get("feature", "magnitude")
        self.log_floor = float(spec.get("log_floor", 1e-12))
        self.output = spec.get("output", "mask") if self.domain == "spectral" else "frame"
        self.stft = stft
        self.session = _open_session(self.path, num_threads)
        self._threads, self._rows_session = num_threads, False  # False: not looked at yet
        with open(self.path, "rb") as fh:
            self.file_sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        self._input = self._pick(inputs, spec.get("input_name"), "input")
        self._output = self._pick(outputs, spec.get("output_name"), "output")
        self._names = list(outputs)
        self._axes = self._check_input_axes()
        self._check_output_axes()
        self._states = self._pair(inputs, outputs, dict(spec.get("states") or {}))

    # ------------------------------------------------------------------------------------------ checks
    def _fail(self, reason: str) -> OnnxTeacherError:
        return OnnxTeacherError(self.path, f"{self.key}: {reason}")

    def _pick(self, args: dict, name: str | None, kind: str):
        if name is None:
            return next(iter(args.values()))
        if name not in args:
            raise self._fail(
                f"{kind}_name={name!r}: the model has no such {kind}; its {kind}s are {_listing(args.values())}"
            )
        return args[name]

    def _tail(self) -> list[tuple[str, int, str]]:
        """(axis, expected size, the key that sets it) after [batch, frames]."""
        if self.domain == "time":
            return [("samples", self.stft.n_fft, "teacher.onnx.stft.n_fft")]
        bins = [("bins", self.stft.bins, "teacher.onnx.stft.n_fft")]
        return bins + [("real/imag", 2, f"{self.key}.feature")] if self.feature == "real_imag" else bins

    def _check_input_axes(self) -> list[str]:
        shape, tail = list(self._input.shape), self._tail()
        layouts = [["batch", "frames"] + [a for a, _, _ in tail]]
        if self.domain == "time":
            layouts.append(["batch", "samples"])
        axes = next((layout for layout in layouts if len(layout) == len(shape)), None)
        described = " or ".join(f"[{', '.join(layout)}]" for layout in layouts)
        if axes is None:
            raise self._fail(
                f"input {self._input.name!r} has shape {shape} (rank {len(shape)}); a {self.domain} stage with "
                f"feature={self.feature!r} expects {described}" if self.domain == "spectral" else
                f"input {self._input.name!r} has shape {shape} (rank {len(shape)}); a time stage expects {described}"
            )  # fmt: skip
        if self._input.type not in _FLOATS:
            raise self._fail(
                f"input {self._input.name!r} has type {self._input.type}; expected a float tensor"
            )
        sizes = {axis: (size, key) for axis, size, key in tail}
        for k, (axis, dim) in enumerate(zip(axes, shape, strict=True)):
            self._check_axis(self._input.name, shape, axes, k, axis, _fixed(dim), sizes)
        return axes

    def _check_axis(self, name, shape, axes, k, axis, size, sizes) -> None:
        where = f"{'input' if name == self._input.name else 'output'} {name!r} has shape {shape}, read as [{', '.join(axes)}]:"
        if size is None:
            return
        if axis == "batch" and size != 1:
            raise self._fail(f"{where} its batch axis ({k}) is fixed at {size}; expected 1 or dynamic")
        if axis == "frames" and size != 1:
            raise self._fail(
                f"{where} its frames axis ({k}) is fixed at {size}; expected 1 (one frame per call) or dynamic "
                "(the whole sequence in one call)"
            )
        if axis not in sizes or size == sizes[axis][0]:
            return
        want, key = sizes[axis]
        if axis == "bins":
            raise self._fail(
                f"{where} its bins axis ({k}) has {size} bins, but {key}={self.stft.n_fft} gives {want} "
                f"(n_fft / 2 + 1); {size} bins need {key}={2 * (size - 1)}"
            )
        if axis == "samples":
            raise self._fail(
                f"{where} its samples axis ({k}) is {size}, but {key}={self.stft.n_fft} gives frames of {want}; set {key}={size}"
            )
        raise self._fail(f"{where} its {axis} axis ({k}) is {size}; {key}={self.feature!r} expects {want}")

    def _check_output_axes(self) -> None:
        shape = list(self._output.shape)
        if self.output in ("complex_mask", "complex"):
            axes = ["batch", "frames", "bins", "real/imag"]
        else:
            axes = self._axes[:-1] + [self._axes[-1] if self.domain == "time" else "bins"]
        if len(shape) != len(axes):
            raise self._fail(
                f"output {self._output.name!r} has shape {shape} (rank {len(shape)}); output={self.output!r} "
                f"expects [{', '.join(axes)}] (another output? set {self.key}.output_name)"
            )
        sizes = {a: (s, key) for a, s, key in self._tail()}
        sizes["bins"] = (self.stft.bins, "teacher.onnx.stft.n_fft")
        sizes["real/imag"] = (2, f"{self.key}.output")
        for k, (axis, dim) in enumerate(zip(axes, shape, strict=True)):
            if axis not in ("batch", "frames"):
                self._check_axis(self._output.name, shape, axes, k, axis, _fixed(dim), sizes)

    def _pair(self, inputs: dict, outputs: dict, mapping: dict[str, str]) -> list[tuple]:
        state_in = [a for n, a in inputs.items() if n != self._input.name]
        state_out = [o for n, o in outputs.items() if n != self._output.name]
        if mapping:
            for name_in, name_out in mapping.items():
                if name_in not in inputs or name_in == self._input.name:
                    raise self._fail(
                        f"states: {name_in!r} is not a state input; state inputs: {_listing(state_in)}"
                    )
                if name_out not in outputs or name_out == self._output.name:
                    raise self._fail(
                        f"states: {name_out!r} is not a state output; state outputs: {_listing(state_out)}"
                    )
            unmapped = [a.name for a in state_in if a.name not in mapping]
            if unmapped:
                raise self._fail(
                    f"states: no output is fed back to state input(s) {unmapped}; add them to {self.key}.states"
                )
            pairs = [(inputs[i], outputs[o]) for i, o in mapping.items()]
        elif len(state_in) != len(state_out) or (len(state_in) > 1 and not _named_pairs(state_in, state_out)):
            raise self._fail(
                f"the model has state inputs {_listing(state_in)} and state outputs {_listing(state_out)} besides "
                f"{self._input.name!r} -> {self._output.name!r}; say which output feeds which input: "
                f"{self.key}.states: {{input: output}}"
            )
        else:
            pairs = _pair_states(state_in, state_out)
        self._state_init = {}
        for arg, _ in pairs:
            shape = [1 if k == 0 and _fixed(d) is None else _fixed(d) for k, d in enumerate(arg.shape)]
            if None in shape:
                raise self._fail(
                    f"state input {arg.name!r} has shape {list(arg.shape)}; states need a fixed shape"
                )
            self._state_init[arg.name] = np.zeros(shape, dtype=_FLOATS.get(arg.type, np.float32))
        return pairs

    # --------------------------------------------------------------------------------------------- run
    @property
    def whole_sequence(self) -> bool:
        return "frames" in self._axes and _fixed(self._input.shape[1]) is None

    def run(self, data: np.ndarray) -> np.ndarray:
        """data: spectra [n, F, bins] (complex) or frames [n, F, n_fft] -> the same after this stage."""
        features = self._features(data).astype(_FLOATS[self._input.type])
        n, count = features.shape[:2]
        batch_dynamic = _fixed(self._input.shape[0]) is None
        if not self._states and batch_dynamic:  # every frame of every row in one call
            y = self._call(features if self.whole_sequence else self._per_frame(features), {})
        elif self.whole_sequence:  # one call per row, its states starting at zero
            y = np.concatenate([self._call(features[r : r + 1], dict(self._state_init)) for r in range(n)])
        elif n > 1 and self._rows() is not None:  # all rows together, one call per frame
            y = self._stream(features, self._rows_session)
        else:
            y = np.concatenate([self._stream(features[r : r + 1]) for r in range(n)])
        return self._apply(data, np.asarray(y, dtype=np.float64).reshape(n, count, *self._out_tail()))

    def _per_frame(self, features: np.ndarray) -> np.ndarray:
        n, count = features.shape[:2]
        merged = features.reshape(n * count, *features.shape[2:])
        return merged[:, None] if "frames" in self._axes else merged

    def _rows(self):
        """A session of this graph taking many rows at once, checked against this one (``batching.rows_session``);
        ``None`` where the graph cannot. Built on first need."""
        # checked even for a dynamic batch axis: the states must batch on axis 0 too
        if self._rows_session is False:
            self._rows_session = rows_session(self.path, self.session, self._threads)
        return self._rows_session

    def _stream(self, features: np.ndarray, session=None) -> np.ndarray:
        """Rows' frames [n, F, ...] -> outputs [n, F, ...]: one call per frame (all n rows in it), each state
        output fed back to its input."""
        n = features.shape[0]
        states = {k: np.repeat(v, n, axis=0) for k, v in self._state_init.items()}
        out = []
        for f in range(features.shape[1]):
            frame = features[:, f]
            feed = frame[:, None] if "frames" in self._axes else frame
            results = self._run({self._input.name: feed, **states}, session)
            out.append(results[self._output.name].reshape(n, -1))
            states = {a.name: results[o.name].astype(self._state_init[a.name].dtype) for a, o in self._states}
        return np.stack(out, axis=1)

    def _call(self, feed: np.ndarray, states: dict) -> np.ndarray:
        return self._run({self._input.name: feed, **states})[self._output.name]

    def _run(self, feeds: dict, session=None) -> dict:
        try:
            return dict(zip(self._names, (session or self.session).run(None, feeds), strict=True))
        except Exception as err:  # onnxruntime raises its own exception types
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise self._fail(f"onnxruntime failed on inputs {shapes}: {err}") from None

    def _features(self, data: np.ndarray) -> np.ndarray:
        if self.domain == "time":
            return data
        power = data.real**2 + data.imag**2
        features = {
            "magnitude": lambda: np.sqrt(power),
            "power": lambda: power,
            "log_power": lambda: np.log10(np.maximum(power, self.log_floor)),
            "real_imag": lambda: np.stack([data.real, data.imag], axis=-1),
        }
        return features[self.feature]()

    def _out_tail(self) -> list[int]:
        if self.domain == "time":
            return [self.stft.n_fft]
        return [self.stft.bins] + ([2] if self.output != "mask" else [])

    def _apply(self, data: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.output == "frame":
            return y
        if self.output == "mask":
            return data * y
        spectrum = y[..., 0] + 1j * y[..., 1]
        return data * spectrum if self.output == "complex_mask" else spectrum

    # ------------------------------------------------------------------------------------------ counts
    def macs_per_second(self, sample_rate: int) -> dict[str, float]:
        frames_per_second = sample_rate / self.stft.hop
        frames, calls = (math.ceil(frames_per_second), 1.0) if self.whole_sequence else (1, frames_per_second)
        tail = [d for _, d, _ in self._tail()]
        shape = [1, frames, *tail] if "frames" in self._axes else [1, *tail]
        shapes = {self._input.name: shape, **{k: list(v.shape) for k, v in self._state_init.items()}}
        per_call = onnx_graph_macs(self.path, shapes)
        scale = calls * (frames_per_second / frames if self.whole_sequence else 1.0)
        return {op: macs * scale for op, macs in per_call.items()}

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "domain": self.domain,
            "input": {"name": self._input.name, "shape": list(self._input.shape), "axes": self._axes},
            "output": {"name": self._output.name, "shape": list(self._output.shape), "as": self.output},
            "states": {a.name: o.name for a, o in self._states},
            "per_call": "whole sequence" if self.whole_sequence else "one frame",
        }


def _named_pairs(state_in: list, state_out: list) -> bool:
    """Whether every state input has exactly one output of the same name stem (``h_in`` / ``h_out``)."""
    keys_in, keys_out = [_state_key(a.name) for a in state_in], [_state_key(o.name) for o in state_out]
    return len(set(keys_in)) == len(keys_in) and sorted(keys_in) == sorted(keys_out)


class SpectralTeacher:
    """``framing=spectral``: ``enhance(wave[T] or [B, T] at 16 kHz) -> same shape, float32``."""

    framing = "spectral"

    def __init__(self, block: dict, num_threads: int = 1):
        self.options = block
        self.sample_rate = int(block.get("sample_rate") or SAMPLE_RATE)
        self.stft = StftFraming.from_block(block.get("stft") or {})
        specs = block.get("stages") or []
        if not specs:
            raise OnnxTeacherError(
                "teacher.onnx", "framing='spectral' needs at least one stage (teacher.onnx.stages)"
            )
        problem = self.stft.problem()
        if problem:
            raise OnnxTeacherError(specs[0]["path"], problem)
        for k, spec in enumerate(specs):
            if not spec.get("path") or not Path(spec["path"]).is_file():
                raise OnnxTeacherError(
                    spec.get("path") or "teacher.onnx",
                    f"teacher.onnx.stages[{k}].path: stage {k + 1} of the {len(specs)}-stage chain not found",
                )
        self.stages = [OnnxStage(spec, k, self.stft, num_threads) for k, spec in enumerate(specs)]
        self.path = self.stages[0].path
        self.files = [s.path for s in self.stages]
        self._macs: dict[str, float] | None = None

    def enhance(self, wave: np.ndarray) -> np.ndarray:
        """Enhance 16 kHz audio. wave: [T] or [B, T] -> float32 of the same shape."""
        return enhance_at_rate(wave, self.sample_rate, self._run, type(self).__name__)

    __call__ = enhance

    def _run(self, x: np.ndarray) -> np.ndarray:
        n_fft = self.stft.n_fft
        data, domain = np.fft.rfft(self.stft.frames(x), n=n_fft), "spectral"
        for stage in self.stages:
            if stage.domain != domain:
                data = np.fft.irfft(data, n=n_fft) if stage.domain == "time" else np.fft.rfft(data, n=n_fft)
                domain = stage.domain
            data = stage.run(data)
        if domain == "spectral":
            data = np.fft.irfft(data, n=n_fft)
        return self.stft.synthesize(data, x.shape[1])

    def as_torch_teacher(self) -> TorchOnnxTeacher:
        return TorchOnnxTeacher(self)

    def describe(self) -> dict:
        return {
            "arch": "onnx",
            "framing": "spectral",
            "sample_rate": self.sample_rate,
            "stft": vars(self.stft),
            "stages": [s.describe() for s in self.stages],
        }

    def identity(self) -> dict:
        """Every stage file's SHA-256, the framing and what each stage resolved (names, axes, states)."""
        resolved = self.describe()
        for stage in resolved["stages"]:
            stage.pop("path")
        return {"file_sha256": [s.file_sha256 for s in self.stages], "resolved": resolved}

    def macs_breakdown(self) -> dict[str, float]:
        """Forward MACs per second of audio, by ONNX op type, summed over the stages (FFTs not counted)."""
        if self._macs is None:
            totals: dict[str, float] = {}
            for stage in self.stages:
                for op, macs in stage.macs_per_second(self.sample_rate).items():
                    totals[op] = totals.get(op, 0.0) + macs
            self._macs = totals
        return dict(self._macs)

    def param_count(self) -> int:
        """Numbers stored in the graphs' initializers (every stage)."""
        return sum(onnx_param_count(path) for path in self.files)
