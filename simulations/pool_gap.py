"""pool_gap: where does a pretrained model lose — on unseen voices or on unseen noise places?

What it answers: pretraining validation mixes *held-out* voices with *held-out* noise places, and the users of the
world are other voices in other places again. A model that scores far better on its training pool than on
validation is overfitting something; this study splits that gap. It scores each model on fresh mixtures of the four
combinations of the pretraining pool's splits (training / validation voices × training / validation noise places),
mixed exactly as pretraining validation is (4 s, online SNR −5…10 dB, the same level range), ``--draws`` seeded
draws of ``--mixtures`` each. A large drop from training to validation *noise* with the voices held fixed says the
noise pool is too small for the model (see ``pretrain.noise_augment``); a large drop across voices says the speaker
pool is.

    python simulations/pool_gap.py                                   # the shipped teachers and 2x32 student
    python simulations/pool_gap.py --models builtin:teacher-gru-log runs/pretrain/teacher/best.pt
    python simulations/pool_gap.py --quick                           # 2x32 student, 16 mixtures, one draw

Duration: 1 min 23 s on one core for the four shipped models at the defaults (measured). Writes
``table.md`` and ``results.json`` to --out (default ``simulations/results/pool_gap``; ``…_quick`` with --quick).
"""

from __future__ import annotations

import argparse

import numpy as np
from studylib import RESULTS_DIR, StudyError, md_table, num, prepare_out, run_main, write_json

DEFAULT_MODELS = [
    "builtin:student-2x32",
    "builtin:teacher-gru",
    "builtin:teacher-gru-log",
    "builtin:teacher-convtasnet",
]
SPLITS = ("train", "val")


def markdown(results: list[dict], mixtures: int, draws: int, snr_db: list[float]) -> str:
    from fedpse.distill.pretrain import VALIDATION_SECONDS

    headers = [
        "model",
        "train voices, train noise",
        "train voices, val noise",
        "val voices, train noise",
        "val voices, val noise",
        "noise gap (train voices)",
        "voice gap (train noise)",
    ]
    rows = []
    for r in results:
        s = r["si_sdr"]
        rows.append(
            [
                r["label"],
                *[num(s[f"{a}/{b}"]) for a in SPLITS for b in SPLITS],
                num(s["train/train"] - s["train/val"]),
                num(s["train/train"] - s["val/train"]),
            ]
        )
    return (
        f"SI-SDR (dB) on the pretraining pool's splits (voices / noise places), mean of {draws} × {mixtures} "
        f"mixtures of {VALIDATION_SECONDS:g} s at {num(snr_db[0], 0)}…{num(snr_db[1], 0)} dB; "
        "gap = training-pool score minus the score with that factor unseen.\n\n" + md_table(headers, rows)
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="pool_gap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 2x32 student, 16 mixtures, one draw")
    parser.add_argument("--models", nargs="+", help="checkpoints: paths or builtin:NAME")
    parser.add_argument("--mixtures", type=int, help="mixtures per draw (default 64, the validation size)")
    parser.add_argument("--draws", type=int, help="seeded draws per combination (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--config", help="a fedpse config whose world's pool is scored (default: the default world)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    models = args.models or (["builtin:student-2x32"] if args.quick else DEFAULT_MODELS)
    mixtures = args.mixtures or (16 if args.quick else 64)
    draws = args.draws or (1 if args.quick else 2)
    if mixtures < 1 or draws < 1:
        raise StudyError(f"--mixtures {mixtures} --draws {draws}: expected at least 1 each")
    out = prepare_out(args.out or RESULTS_DIR / ("pool_gap_quick" if args.quick else "pool_gap"))

    import torch

    from fedpse.config import ConfigError, load_config
    from fedpse.distill.pretrain import MixingPool, evaluate, validation_batch
    from fedpse.models.checkpoints import CheckpointError, load_checkpoint
    from fedpse.models.zoo import resolve_checkpoint
    from fedpse.world.reader import World

    torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config, overrides=args.set)
    except ConfigError as err:
        raise StudyError(str(err)) from None
    world = World.open(cfg)
    loaded = []
    for name in models:
        try:
            loaded.append((name, *load_checkpoint(resolve_checkpoint(name, "--models"))))
        except ConfigError as err:
            raise StudyError(str(err)) from None
        except CheckpointError as err:
            raise StudyError(f"--models {name}: {err}") from None
    speech = {s: world.pretrain_speech_files(s) for s in SPLITS}
    noise = {s: world.pretrain_noise_files(s) for s in SPLITS}
    batches = {}
    for a in SPLITS:
        for b in SPLITS:
            pool = MixingPool(speech[a], noise[b])
            batches[f"{a}/{b}"] = [
                validation_batch(
                    pool, np.random.default_rng([cfg.seed, 91, draw]), mixtures, cfg.pretrain.snr_db
                )
                for draw in range(draws)
            ]
    results = []
    for name, model, card in loaded:
        scores = {k: float(np.mean([evaluate(model, n, c) for n, c in v])) for k, v in batches.items()}
        label = name.removeprefix("builtin:") + (f" ({card['steps']} steps)" if "steps" in card else "")
        results.append({"model": name, "label": label, "steps": card.get("steps"), "si_sdr": scores})
        print(f"pool_gap: {label}: " + ", ".join(f"{k} {num(v)}" for k, v in scores.items()), flush=True)
    snr_db = list(cfg.pretrain.snr_db)
    text = markdown(results, mixtures, draws, snr_db)
    (out / "table.md").write_text(text)
    write_json(
        out / "results.json", {"rows": results, "mixtures": mixtures, "draws": draws, "snr_db": snr_db}
    )
    print(f"pool_gap: wrote {out / 'table.md'}, {out / 'results.json'}")
    return {"rows": results}


if __name__ == "__main__":
    run_main("pool_gap", main)
