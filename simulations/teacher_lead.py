"""teacher_lead: a teacher checkpoint's lead over the generic 2×32 student on held-out users, without adapting anyone:
the quick measure of what a pretraining change buys a teacher (``heldout.py`` then measures the students it gives).

    python simulations/teacher_lead.py --checkpoint runs/ctn/teacher/last.pt --arch convtasnet --worlds synth
    python simulations/teacher_lead.py --checkpoint builtin:teacher-convtasnet --arch convtasnet --worlds builtin synth

Worlds are ``heldout.py``'s (its preset ``simulations/configs/heldout.yaml``: the built-in world and the held-out
synthesizer / noise worlds), each at fixed input SNRs (``--snr``, as paper_table builds them), on its first
``--users`` users. Per user: mean SI-SDR over its test mixtures of the mixture, the generic student and the teacher
(``adapt.score``, the scoring every study uses). Prints a table and writes ``--out`` (JSON; default
``simulations/results/teacher_lead/<label>.json``). A world whose users speak with a neural engine the checkpoint
trained on is refused (not held out). One thread; a 12-user world at two SNRs takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from paper_table_setup import world_overrides
from studylib import REPO, RESULTS_DIR, check_names, duration, load_preset, run_main, write_json


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="teacher_lead", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, help="teacher weights: a path or builtin:NAME")
    ap.add_argument(
        "--arch", default="gru", choices=["gru", "convtasnet"], help="teacher.arch of the checkpoint"
    )
    ap.add_argument(
        "--set", action="append", default=[], help="extra teacher.* overrides, e.g. teacher.magnitude=linear"
    )
    ap.add_argument("--worlds", nargs="+", default=["synth"], help="names of heldout.yaml's worlds")
    ap.add_argument("--snr", nargs="+", type=float, default=[0.0, 5.0])
    ap.add_argument("--users", type=int, help="first N users of each world (default: the preset's count)")
    ap.add_argument("--label", help="name of the result file (default: from the checkpoint)")
    ap.add_argument("--out")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    import torch

    from fedpse.config import load_config
    from fedpse.distill.adapt import score
    from fedpse.models.zoo import load_student, load_teacher
    from fedpse.world.cache import open_world
    from fedpse.world.neural_pool import check_held_out

    args = parse_args(argv)
    torch.set_num_threads(1)
    preset = load_preset("heldout", False, None)
    worlds = dict(preset["worlds"])
    check_names(args.worlds, worlds, "--worlds", "world")
    teacher_set = [f"teacher.arch={args.arch}", f"teacher.checkpoint={args.checkpoint}", *args.set]
    label = args.label or args.checkpoint.replace("builtin:", "").replace("/", "_").strip("_")
    t0 = time.perf_counter()
    results: dict = {"checkpoint": args.checkpoint, "arch": args.arch, "overrides": teacher_set, "worlds": {}}
    lines = []
    teacher, card = load_teacher(
        load_config(overrides=teacher_set)
    )  # a bad checkpoint fails before any world
    student, _ = load_student(load_config(overrides=["student.checkpoint=builtin:student-2x32"]))
    for name in args.worlds:
        spec = worlds[name]
        users = args.users or spec.get("users") or preset["users"]
        base = list(spec.get("overrides") or [])
        config = REPO / spec["config"] if spec.get("config") else None
        world_cfg = load_config(config, overrides=base)
        check_held_out(world_cfg, card, f"teacher {args.checkpoint}")
        world_users = max(users, world_cfg.world.num_users)  # the fixed-SNR worlds as paper_table builds them
        for snr in args.snr:
            cfg = load_config(config, overrides=[*base, *world_overrides(snr, world_users)])
            world = open_world(cfg, progress=True)
            rows = []
            for user in world.user_ids()[:users]:
                s = score({"generic": student, "teacher": teacher}, world.test_set(user), user)
                rows.append({"user": user, **s})
            lead = np.array([r["teacher"] - r["generic"] for r in rows])
            cell = {
                "users": len(rows),
                "mixture": float(np.mean([r["noisy"] for r in rows])),
                "generic": float(np.mean([r["generic"] for r in rows])),
                "teacher": float(np.mean([r["teacher"] for r in rows])),
                "teacher_minus_generic": float(lead.mean()),
                "teacher_below_generic": int(np.sum(lead < 0)),
                "rows": rows,
            }
            results["worlds"].setdefault(name, {})[f"{snr:g}"] = cell
            lines.append(
                f"| {name} | {snr:g} dB | {cell['generic']:.2f} | {cell['teacher']:.2f} | "
                f"{cell['teacher_minus_generic']:+.2f} | {cell['teacher_below_generic']} / {cell['users']} |"
            )
    results["wall_seconds"] = time.perf_counter() - t0
    out = Path(args.out) if args.out else RESULTS_DIR / "teacher_lead" / f"{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, results)
    print(f"teacher {args.checkpoint} ({args.arch}) against the generic 2×32 student, SI-SDR dB")
    print("| world | input SNR | generic | teacher | teacher − generic | users teacher < generic |")
    print("|---|---|---|---|---|---|")
    print("\n".join(lines))
    print(f"teacher_lead: wrote {out} in {duration(results['wall_seconds'])}")
    return results


def md_folder(folder: Path) -> str:
    """Every result file of ``folder`` (one per checkpoint) as one Markdown table, in file-name order."""
    from studylib import StudyError, md_table, num

    files = sorted(folder.glob("*.json"))
    if not files:
        raise StudyError(f"{folder}: no teacher_lead result files; run simulations/teacher_lead.py first")
    rows = []
    for path in files:
        try:
            data = json.loads(path.read_text())
            cells = data["worlds"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise StudyError(f"{path}: not a teacher_lead result file ({err})") from None
        for world, by_snr in cells.items():
            for snr, c in sorted(by_snr.items(), key=lambda kv: float(kv[0])):
                rows.append(
                    [
                        f"`{path.stem}`",
                        world,
                        f"{num(float(snr), 0)} dB",
                        num(c["generic"]),
                        num(c["teacher"]),
                        num(c["teacher_minus_generic"], signed=True),
                        f"{c['teacher_below_generic']} / {c['users']}",
                    ]
                )
    return md_table(
        [
            "teacher (result file)",
            "world",
            "input SNR",
            "generic 2×32",
            "teacher",
            "teacher − generic",
            "users teacher < generic",
        ],
        rows,
    )


if __name__ == "__main__":
    run_main("teacher_lead", main)
