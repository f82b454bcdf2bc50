"""mask_ceiling: how far could a mask network on the paper's STFT go, and how far are the models from it?

What it answers: the GRU students and the GRU teacher all estimate a real mask in [0, 1] (a sigmoid) on the complex
STFT (1024/256, Hann) of the noisy input. The oracle masks computed from the clean reference bound what any such
network can reach on a user's held-out test mixtures: the ideal ratio mask ``|S| / |X|`` and the phase-sensitive
mask ``Re(S / X)`` (the mean-square-optimal real mask), both clipped to [0, 1]. Next to them: the generic 2×32
student and both teachers on the same users, read from the paper table's rows. If a model is far below the
ceiling, the mask family is not what holds it back; its capacity or training is.

    python simulations/mask_ceiling.py                 # 40 users of the fixed-SNR worlds at 0 and 5 dB
    python simulations/mask_ceiling.py --quick         # 4 users at 5 dB
    python simulations/mask_ceiling.py --snr -5 0 5 10 --users 40

Duration: 1 min 33 s of CPU for the full run (measured; 8 min 41 s wall at nice 10 beside a two-worker job).
The clean references are used only here, for the oracle (scoring), never for training. Uses the same fixed-SNR
worlds as ``paper_table.py`` (built on first use, ~1 min each). Writes ``table.md`` and ``results.json`` to --out
(default ``simulations/results/mask_ceiling``; ``…_quick`` with --quick).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from paper_table_setup import TEACHER_LABELS, TEACHERS, world_overrides
from studylib import RESULTS_DIR, StudyError, md_table, num, prepare_out, run_main, write_json

TEACHER_NAMES = tuple(TEACHERS)

QUICK = {"users": 4, "snr_db": [5.0]}
FULL = {"users": 40, "snr_db": [0.0, 5.0]}


def oracle_masks(
    noisy: np.ndarray, clean: np.ndarray, n_fft: int = 1024, hop: int = 256
) -> dict[str, np.ndarray]:
    """The noisy mixture enhanced by each oracle [0, 1] mask on its STFT: ``{"irm": wave, "psm": wave}``."""
    import torch

    from fedpse.models.stft import Stft

    stft = Stft(n_fft, hop)
    x = torch.from_numpy(np.asarray(noisy, dtype=np.float32))
    s = torch.from_numpy(np.asarray(clean, dtype=np.float32))
    with torch.no_grad():
        spec_x, spec_s = stft(x), stft(s)
        power = spec_x.abs() ** 2 + 1e-10
        masks = {
            "irm": (spec_s.abs() / power.sqrt()).clamp(0.0, 1.0),
            "psm": ((spec_s * spec_x.conj()).real / power).clamp(0.0, 1.0),
        }
        return {k: stft.inverse(m * spec_x, len(noisy)).numpy() for k, m in masks.items()}


def models_from_rows(path: Path, users: list[str]) -> dict[float, dict[str, float]]:
    """Mean SI-SDR of the generic 2×32 student and each teacher per SNR, over ``users``, from paper-table rows
    (the latest row of each SNR × user × teacher)."""
    if not path.exists():
        return {}
    out: dict[float, dict[str, list[float]]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise StudyError(f"{path} line {n}: not JSON ({err.msg})") from None
        if row.get("student") != 32 or row.get("user") not in users:
            continue
        cell = out.setdefault(float(row["snr_db"]), {})
        # the last row of a cell wins, as in paper_table: rows of a re-trained model are appended after the old ones
        cell[("generic", row["user"])] = row["si_sdr_generic"]
        cell[(row["teacher"], row["user"])] = row["si_sdr_teacher"]
    means = {}
    for snr, cell in out.items():
        means[snr] = {}
        for name in ("generic", *TEACHER_NAMES):
            values = [v for (k, _), v in cell.items() if k == name]
            if len(values) == len(users):  # only when every user has it
                means[snr][name] = float(np.mean(values))
    return means


def markdown(results: list[dict]) -> str:
    """The oracle masks next to the 2×32 student and every teacher that has a score for every user."""
    teachers = [t for t in TEACHER_NAMES if any(f"si_sdr_{t}" in r for r in results)]
    gru_teachers = [t for t in teachers if t.startswith("gru")]
    rows = [
        [
            f"{num(r['snr_db'], 0)} dB",
            num(r["si_sdr_noisy"]),
            num(r["si_sdr_irm"]),
            num(r["si_sdr_psm"]),
            num(r.get("si_sdr_generic")),
            *[num(r.get(f"si_sdr_{t}")) for t in teachers],
            *[num(r["si_sdr_irm"] - r[f"si_sdr_{t}"]) if f"si_sdr_{t}" in r else "–" for t in gru_teachers],
        ]
        for r in results
    ]
    headers = ["input SNR", "mixture", "oracle IRM", "oracle PSM", "2×32 pretrained"]
    headers += [TEACHER_LABELS[t] for t in teachers] + [f"IRM − {TEACHER_LABELS[t]}" for t in gru_teachers]
    return (
        f"SI-SDR (dB), mean over {results[0]['users']} users' held-out test mixtures; oracle masks clipped to [0, 1] "
        "on the STFT 1024/256 (Hann); models from the paper table's rows (– where not every user has a row).\n\n"
        + md_table(headers, rows)
    )


def main(argv: list[str] | None = None) -> dict:
    from fedpse.audio.metrics import si_sdr

    parser = argparse.ArgumentParser(prog="mask_ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 users at 5 dB")
    parser.add_argument("--users", type=int, help="the default world's first N users")
    parser.add_argument("--snr", type=float, nargs="+", help="input SNRs (dB)")
    parser.add_argument(
        "--rows", default=str(RESULTS_DIR / "paper_table" / "rows.jsonl"), help="paper-table rows"
    )
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    users_n = args.users or preset["users"]
    snrs = args.snr or preset["snr_db"]
    if users_n < 1:
        raise StudyError(f"--users {users_n}: expected at least 1")
    out = prepare_out(args.out or RESULTS_DIR / ("mask_ceiling_quick" if args.quick else "mask_ceiling"))

    from fedpse.config import load_config
    from fedpse.world.reader import World

    results = []
    for snr in snrs:
        world = World.open(load_config(overrides=world_overrides(snr, users_n)))
        users = world.user_ids()[:users_n]
        scores: dict[str, list[float]] = {"noisy": [], "irm": [], "psm": []}
        for uid in users:
            for noisy, clean in world.test_set(uid):
                scores["noisy"].append(si_sdr(noisy, clean))
                for name, wave in oracle_masks(noisy, clean).items():
                    scores[name].append(si_sdr(wave, clean))
        models = models_from_rows(Path(args.rows), users).get(float(snr), {})
        results.append(
            {
                "snr_db": snr,
                "users": len(users),
                "mixtures": len(scores["noisy"]),
                **{f"si_sdr_{k}": float(np.mean(v)) for k, v in scores.items()},
                **{f"si_sdr_{k}": v for k, v in models.items()},
            }
        )
        print(f"mask_ceiling: {snr:g} dB: " + ", ".join(f"{k} {num(v)}" for k, v in results[-1].items()))
    text = markdown(results)
    (out / "table.md").write_text(text)
    write_json(out / "results.json", {"rows": results, "users": users_n, "snr_db": snrs})
    print(f"mask_ceiling: wrote {out / 'table.md'}, {out / 'results.json'}")
    return {"rows": results}


if __name__ == "__main__":
    run_main("mask_ceiling", main)
