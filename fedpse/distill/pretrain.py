"""Generic pretraining of students and teachers on the world's pretraining pool (never on users' audio).

Online mixing: each step draws fresh (speech crop, noise crop, SNR in ``pretrain.snr_db``, level) combinations
from the training speakers and noise places (``pretrain.noise_augment`` of the noises made new by ``augment_noise``:
the default pool's 54 places are few enough for a teacher to learn them; ``simulations/pool_gap.py`` measures that);
validation uses a fixed, seeded set of mixtures from the *held-out* pretraining speakers and noise places. Loss:
negative SI-SDR to the clean speech.

Reverberant pretraining (``pretrain.reverb_share`` > 0, for joint denoising + dereverberation): that share of the
mixtures has its speech convolved with the RIR of a pretraining room (``world.rooms.pretraining_rooms``: seeded, RT60
in ``pretrain.reverb_rt60_s``, never a user's room; validation in rooms of its own) and the target is the dry or
early-reverb speech (``world.room.target``), aligned on the direct path as users' references are. Noise is not
reverberated: users' noise is recorded at the device, already in its room. ``pretrain.init_checkpoint`` starts from
a shipped model's weights (how the dereverberation checkpoints were made from the denoising ones). Checkpoints every ``checkpoint_every`` steps (``last.pt`` + optimizer state
for ``--resume``), best-by-validation kept as ``best.pt``.

At scale: the model trains on ``device.pretrain`` (checkpoints are written from CPU tensors either way, so a file
trained on a GPU loads anywhere); ``pretrain.workers`` processes mix the batches of the next steps while the
optimizer runs (each step's batch depends only on the seed and the step, so the numbers do not change);
``pretrain.amp`` trains in fp16 or bf16 autocast on CUDA (the loss and the weights stay fp32).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedpse.audio.io import SAMPLE_RATE, load_audio
from fedpse.config import Config, ConfigError, config_to_dict
from fedpse.distill.loss import neg_si_sdr_loss, si_sdr
from fedpse.distill.voice_augment import augment_voice
from fedpse.models.accelerator import describe_device, role_device, to_cpu
from fedpse.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from fedpse.models.finite import NonFiniteOutputError
from fedpse.models.registry import build_from_spec, describe_spec
from fedpse.models.zoo import load_weights, role_spec
from fedpse.world.neural_pool import neural_pretrain_speech
from fedpse.world.rooms import RirBank, Room, pretraining_rooms

LEVEL_DBFS = (-36.0, -16.0)  # mixture level range: the GRU sees linear magnitudes, so train level-robust
VALIDATION_SECONDS = 4.0  # length of each validation mixture


def _pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def augment_noise(x: np.ndarray, rng: np.random.Generator, other) -> np.ndarray:
    """A new noise from a pool one: each of these with probability 1/2 — add ``other()`` (a second place) at
    −6…+6 dB relative level, tilt the spectrum with a first-order filter y[t] = x[t] + a·x[t−1] (a in
    −0.9…0.9), play it backwards. The pool has few places (54 for training in the default world); this widens
    what the model hears."""
    if rng.random() < 0.5:
        y = other()
        rel = 10 ** (rng.uniform(-6.0, 6.0) / 20)
        x = x + y * rel * math.sqrt((float(np.mean(x**2)) + 1e-10) / (float(np.mean(y**2)) + 1e-10))
    if rng.random() < 0.5:
        a = rng.uniform(-0.9, 0.9)
        x = x + a * np.concatenate([[0.0], x[:-1]]).astype(np.float32)
    if rng.random() < 0.5:
        x = x[::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


class MixingPool:
    """In-memory (int16) speech and noise of one split of the pretraining pool, mixed on demand; with ``reverb``
    (a ``RirBank`` of pretraining rooms), ``reverb_share`` of the mixtures have reverberant speech and the bank's
    target (dry or early reverb) as their clean reference."""

    def __init__(
        self,
        speech: dict[str, list[Path]],
        noise: list[Path],
        noise_augment: float = 0.0,
        reverb: RirBank | None = None,
        reverb_share: float = 0.0,
        voice_augment: float = 0.0,
        neural: dict[str, list[Path]] | None = None,
        neural_share: float | None = None,
    ):
        if not speech or not noise:
            raise ValueError("the world's pretraining pool is empty (no speakers or no noise places)")
        self.speakers = [
            [_pcm16(load_audio(p)) for p in files] for files in (speech | (neural or {})).values()
        ]
        # neural_share: that share of mixtures from the neural speakers (listed last), the rest from the world's;
        # None: every speaker equally likely (the draws of a pool without the share)
        self.world_speakers, self.neural_share = len(speech), neural_share if neural else None
        self.noise = [_pcm16(load_audio(p)) for p in noise]
        self.noise_augment = noise_augment
        self.reverb = reverb if reverb_share > 0 else None  # no bank: the random draws are exactly as before
        self.reverb_share = reverb_share
        self.voice_augment = voice_augment

    def _speaker(self, rng: np.random.Generator) -> int:
        if self.neural_share is None:
            return int(rng.integers(len(self.speakers)))
        if rng.random() < self.neural_share:
            return self.world_speakers + int(rng.integers(len(self.speakers) - self.world_speakers))
        return int(rng.integers(self.world_speakers))

    def _speech(self, rng: np.random.Generator, n: int) -> np.ndarray:
        utts = self.speakers[self._speaker(rng)]
        pieces, have = [], 0
        while have < n + SAMPLE_RATE // 4:
            u = utts[rng.integers(len(utts))]
            pieces += [u, np.zeros(int(rng.uniform(0.1, 0.5) * SAMPLE_RATE), np.int16)]
            have += len(u) + len(pieces[-1])
        stream = np.concatenate(pieces)
        start = rng.integers(0, len(stream) - n + 1)
        return stream[start : start + n].astype(np.float32) / 32767

    def neural_seconds(self) -> float:
        """Seconds of audio of the neural speakers (listed after the world's)."""
        return sum(len(u) for utts in self.speakers[self.world_speakers :] for u in utts) / SAMPLE_RATE

    def _voice(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """A clean speech crop; ``voice_augment`` of them from a new voice (``augment_voice``). With 0 no extra
        random draw is made, so the batches are exactly those of a pool without voice augmentation."""
        if self.voice_augment > 0 and rng.random() < self.voice_augment:
            return augment_voice(lambda m: self._speech(rng, m), rng, n)
        return self._speech(rng, n)

    def _noise_piece(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = self.noise[rng.integers(len(self.noise))]
        if len(x) < n:
            x = np.tile(x, math.ceil(n / len(x)))
        start = rng.integers(0, len(x) - n + 1)
        return x[start : start + n].astype(np.float32) / 32767

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = self._noise_piece(rng, n)
        if self.noise_augment > 0 and rng.random() < self.noise_augment:
            x = augment_noise(x, rng, lambda: self._noise_piece(rng, n))
        return x

    def mixture(
        self, rng: np.random.Generator, n: int, snr_db: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.reverb is not None and rng.random() < self.reverb_share:
            # a lead-in before the crop, so the crop also hears the reverberant tail of the speech before it
            speech, target = self.reverb.apply(self._voice(rng, self.reverb.pre + n), rng, n)
        else:
            speech = target = self._voice(rng, n)
        noise = self._noise(rng, n)
        ps, pn = float(np.mean(speech**2)) + 1e-10, float(np.mean(noise**2)) + 1e-10
        snr = rng.uniform(*snr_db)  # against the (reverberant) speech, as in users' mixtures
        noise *= math.sqrt(ps / (pn * 10 ** (snr / 10)))
        noisy = speech + noise
        gain = 10 ** (rng.uniform(*LEVEL_DBFS) / 20) / (math.sqrt(float(np.mean(noisy**2))) + 1e-9)
        peak = float(np.max(np.abs(noisy))) * gain
        gain *= min(1.0, 0.99 / max(peak, 1e-9))
        return noisy * gain, target * gain

    def batch(self, rng: np.random.Generator, size: int, n: int, snr_db) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.mixture(rng, n, snr_db) for _ in range(size)]
        return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(
            np.stack([p[1] for p in pairs])
        )


def validation_batch(
    pool: MixingPool, rng: np.random.Generator, count: int, snr_db
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` mixtures of ``VALIDATION_SECONDS`` from ``pool``, mixed as pretraining validation is."""
    return pool.batch(rng, count, int(VALIDATION_SECONDS * SAMPLE_RATE), tuple(snr_db))


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is the training batch of that step: a function of the seed and the step only, so any worker
    process can mix it and the batches are the same with any ``pretrain.workers``."""

    def __init__(self, pool: MixingPool, seed: int, size: int, num_samples: int, snr_db):
        self.pool, self.seed, self.size, self.num_samples, self.snr_db = pool, seed, size, num_samples, snr_db

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, 5, step])
        return self.pool.batch(rng, self.size, self.num_samples, self.snr_db)


def training_batches(
    batches: StepBatches, start: int, stop: int, workers: int, pin_memory: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of steps ``start`` .. ``stop - 1`` in order: mixed in this process (``workers`` = 0) or by
    ``workers`` forked processes a few steps ahead (a DataLoader; the pool's audio is shared, not copied)."""
    if workers == 0:
        return (batches[step] for step in range(start, stop))
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,  # an item is already a batch
        sampler=range(start, stop),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4,
        multiprocessing_context=context,
    )
    return iter(loader)


def reverb_banks(cfg: Config, world, log=print) -> dict[str, RirBank]:
    """RIR banks of the pretraining rooms: ``pretrain.reverb_rooms`` train rooms and a fifth as many validation
    rooms, from seeded streams of their own, never a room of the world's users; target and early window from
    ``world.room``. RIRs are cached in the world folder next to the users' (``rirs/``)."""
    pc, rc = cfg.pretrain, cfg.world.room
    rt60 = tuple(pc.reverb_rt60_s if pc.reverb_rt60_s is not None else rc.rt60_s)
    key = "pretrain.reverb_rt60_s" if pc.reverb_rt60_s is not None else "world.room.rt60_s"
    if rt60[0] <= 0:
        raise ConfigError(f"{key}: expected RT60 values above 0 s, got {list(rt60)}")
    users = [Room.from_dict(r) for r in world.user_rooms()]
    train_rooms = pretraining_rooms(cfg.seed, "train", pc.reverb_rooms, rt60, exclude=users)
    val_rooms = pretraining_rooms(
        cfg.seed, "val", max(1, pc.reverb_rooms // 5), rt60, exclude=[*users, *train_rooms]
    )
    cache = Path(world.root) / "rirs"
    t0 = time.perf_counter()
    try:
        banks = {
            split: RirBank(rooms, rc.target, rc.early_ms, cache)
            for split, rooms in (("train", train_rooms), ("val", val_rooms))
        }
    except ValueError as err:  # a room the RT60 range cannot make (Sabine absorption above 1)
        raise ConfigError(f"{key}={list(rt60)}: {err}") from None
    log(
        f"reverberant pretraining: {len(train_rooms)} train + {len(val_rooms)} validation rooms, RT60 "
        f"{rt60[0]:g}-{rt60[1]:g} s, target {rc.target}, {pc.reverb_share:.0%} of mixtures "
        f"(RIRs ready in {time.perf_counter() - t0:.0f} s)"
    )
    return banks


def mixed_precision(amp: str, device: torch.device, log) -> torch.dtype | None:
    """The autocast dtype of ``pretrain.amp`` on ``device`` (None: fp32); on the CPU it is ignored, with a note."""
    if amp == "off":
        return None
    if device.type != "cuda":
        log(f"pretrain.amp={amp} ignored: mixed precision is used on CUDA only; training in fp32 on {device}")
        return None
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]


@dataclass
class PretrainResult:
    best_path: Path
    last_path: Path
    steps: int
    best_val_si_sdr: float


@torch.no_grad()
def evaluate(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor, batch: int = 16) -> float:
    """Mean SI-SDR (dB) of ``model`` over fixed validation mixtures."""
    model.eval()
    scores = [si_sdr(model(noisy[i : i + batch]), clean[i : i + batch]) for i in range(0, len(noisy), batch)]
    return float(torch.cat(scores).mean())


def pretrain(
    cfg: Config, role: str, world, resume: bool = False, progress: bool = True, log=print
) -> PretrainResult:
    """Train the ``role`` model ("student" | "teacher") described by ``cfg`` on ``world``'s pretraining pool."""
    from tqdm import tqdm

    pc = cfg.pretrain
    torch.set_num_threads(pc.threads)
    device = role_device(cfg, "pretrain")
    autocast_dtype = mixed_precision(pc.amp, device, log)
    out = Path(pc.out_dir).expanduser() / role
    out.mkdir(parents=True, exist_ok=True)
    spec = role_spec(cfg, role)
    n = int(pc.segment_seconds * SAMPLE_RATE)
    if pc.neural_share is not None and pc.neural_voices == 0:
        raise ConfigError(
            f"pretrain.neural_share={pc.neural_share}: there are no neural speakers to draw from; "
            "set pretrain.neural_voices > 0 or drop the share"
        )
    banks = reverb_banks(cfg, world, log) if pc.reverb_share > 0 else {"train": None, "val": None}
    speech = world.pretrain_speech_files("train")
    neural = {}
    if pc.neural_voices > 0:
        neural = neural_pretrain_speech(
            world, pc.neural_engine, pc.neural_voices, pc.neural_utterances, cfg.seed, log
        )
    train = MixingPool(
        speech,
        world.pretrain_noise_files("train"),
        pc.noise_augment,
        banks["train"],
        pc.reverb_share,
        pc.voice_augment,
        neural,
        pc.neural_share,
    )
    val_pool = MixingPool(
        world.pretrain_speech_files("val"),
        world.pretrain_noise_files("val"),
        reverb=banks["val"],
        reverb_share=pc.reverb_share,
    )
    vrng = np.random.default_rng([cfg.seed, 77])
    val_noisy, val_clean = validation_batch(val_pool, vrng, pc.val_mixtures, pc.snr_db)
    val_noisy, val_clean = val_noisy.to(device), val_clean.to(device)
    torch.manual_seed(cfg.seed)
    model = build_from_spec(spec)  # initialised on the CPU: the same weights on every device
    init_card = None
    if pc.init_checkpoint and not resume:
        start, init_card = load_weights(spec, pc.init_checkpoint, "pretrain.init_checkpoint")
        model.load_state_dict(start.state_dict())
        log(f"starting from {pc.init_checkpoint} (trained {init_card.get('steps', '?')} steps)")
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=pc.lr)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    step, best, history = 0, -math.inf, []
    last_path, best_path, state_path = out / "last.pt", out / "best.pt", out / "train_state.pt"
    if resume:
        if not (last_path.is_file() and state_path.is_file()):
            raise CheckpointError(out, "--resume: no last.pt/train_state.pt here to resume from")
        model, card = load_checkpoint(last_path, expected_arch=spec)
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=pc.lr)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])  # moves the moments to the parameters' device
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        for group in opt.param_groups:  # the config passed now wins (e.g. a lower lr to finish a run)
            group["lr"] = pc.lr
        step, best, history = int(state["step"]), float(state["best"]), list(card.get("history", []))
        log(f"resumed {role} at step {step} (best validation SI-SDR {best:.2f} dB)")
    base_card = {
        "role": role,
        "world_seed": world.seed,
        "world_key": world.manifest["key"],
        "config": {role: config_to_dict(getattr(cfg, role)), "pretrain": config_to_dict(pc)},
        "device": describe_device(device),
    }
    if banks["train"] is not None:
        base_card["reverb"] = {
            "share": pc.reverb_share,
            "train": banks["train"].describe(),
            "val": banks["val"].describe(),
            "noise_reverberated": False,
        }
    if neural:
        seconds = train.neural_seconds()
        base_card["neural_voices"] = {
            "engine": pc.neural_engine,
            "speakers": len(neural),
            "utterances": pc.neural_utterances,
            "audio_seconds": round(seconds, 1),
            **({"share": pc.neural_share} if pc.neural_share is not None else {}),
        }
        share = "in proportion" if pc.neural_share is None else f"{pc.neural_share:.0%} of mixtures"
        log(
            f"training speakers: {len(speech)} of the world + {len(neural)} {pc.neural_engine} voices "
            f"({seconds / 60:.1f} min; {share})"
        )
    if pc.voice_augment > 0:
        base_card["voice_augment"] = pc.voice_augment
    if pc.init_checkpoint:  # on --resume the first session's card says where it started
        base_card["init_checkpoint"] = {
            "ref": pc.init_checkpoint,
            **({k: init_card.get(k) for k in ("steps", "val_si_sdr", "world_key")} if init_card else {}),
        }
    log(f"pretraining {role} on {base_card['device']}")
    if step == 0:
        best = evaluate(model, val_noisy, val_clean)
        history.append({"step": 0, "val_si_sdr": best})
        save_checkpoint(best_path, model, {**base_card, "steps": 0, "val_si_sdr": best, "history": history})
    t0, bar = (
        time.perf_counter(),
        tqdm(total=pc.steps, initial=step, desc=f"pretrain {role}", disable=not progress),
    )

    def save_last() -> None:
        card = {**base_card, "steps": step, "val_si_sdr": history[-1]["val_si_sdr"], "history": history}
        save_checkpoint(last_path, model, card, dtype="fp32")
        state = {"optimizer": opt.state_dict(), "step": step, "best": best}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        torch.save(to_cpu(state), state_path)  # loadable on a machine without the training device

    deadline = t0 + pc.max_minutes * 60 if pc.max_minutes > 0 else math.inf
    target = pc.steps
    batches = training_batches(
        StepBatches(train, cfg.seed, pc.batch_size, n, tuple(pc.snr_db)),
        step,
        target,
        pc.workers,
        pin_memory=device.type == "cuda",
    )
    while step < target:
        if time.perf_counter() > deadline and step % pc.val_every == 0:
            log(f"pretrain.max_minutes={pc.max_minutes} reached at step {step}")
            save_last()
            break
        model.train()
        noisy, clean = next(batches)
        noisy, clean = noisy.to(device, non_blocking=True), clean.to(device, non_blocking=True)
        with torch.autocast(device.type, autocast_dtype) if autocast_dtype else contextlib.nullcontext():
            enhanced = model(noisy)
        loss = neg_si_sdr_loss(enhanced.float(), clean)  # the loss in fp32 also under autocast
        if not torch.isfinite(loss):
            raise NonFiniteOutputError(
                role,
                describe_spec(spec),
                None,
                f"the training loss is {loss.item()} at step {step + 1} of pretraining: the model diverged; "
                f"{best_path} keeps the best weights so far (expected a finite loss; a lower pretrain.lr?)",
            )
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            if pc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), pc.grad_clip)
            opt.step()
        else:  # fp16: scaled loss; gradients unscaled before clipping; a step with inf gradients is skipped
            scaler.scale(loss).backward()
            if pc.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), pc.grad_clip)
            scaler.step(opt)
            scaler.update()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.2f}")
        if step % pc.val_every == 0 or step == target:
            val = evaluate(model, val_noisy, val_clean)
            history.append(
                {
                    "step": step,
                    "val_si_sdr": val,
                    "train_loss": loss.item(),
                    "wall_s": time.perf_counter() - t0,
                }
            )
            log(json.dumps(history[-1]))
            if val > best:
                best = val
                save_checkpoint(
                    best_path, model, {**base_card, "steps": step, "val_si_sdr": val, "history": history}
                )
        if step % pc.checkpoint_every == 0 or step == target:
            save_last()
    del batches  # stops the mixing workers
    bar.close()
    return PretrainResult(best_path, last_path, step, best)
