"""`fedpse` command line: parse, call, print (each command is a thin ``cmd_*`` over the package)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from fedpse.config import ConfigError, describe, load_config

DESCRIPTION = """\
Federated, zero-shot personalization of speech enhancement by knowledge distillation, simulated.

A world of simulated users (each with a voice, a noise place and an SNR of its own) is built once.
Every user's small on-device student is then fine-tuned toward a large teacher's outputs on the user's
own unlabeled noisy audio (zero-shot: no clean speech), the teacher's knowledge reaching each device by
one of several delivery modes (pseudo-targets, teacher weights, a cloud-trained student, ...) over a
Flower federation on Ray; every byte, MAC and simulated second is accounted per user.

main commands:
  fedpse world build            build (or reuse) the world of users a config describes
  fedpse simulate --out RUN     personalize every user over the federation (--modes A,B: several modes)
  fedpse simulate --resume RUN  continue an interrupted run from its last completed work
  fedpse report RUN [RUN ...]   Markdown + HTML report with figures from finished runs
  fedpse config keys            every config key, its default and meaning"""

EPILOG = """\
Every command takes a YAML config and --set dotted.key=value overrides (see `fedpse config keys`).
Start with README.md (what fedpse does, the first run, the delivery modes) and docs/ for the how-tos."""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="YAML config (default: the embedded default)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set world.num_users=10 (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedpse",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help="build or inspect the world of users")
    wsub = world.add_subparsers(dest="action", required=True)
    build = wsub.add_parser("build", help="generate (or reuse) the world described by the config")
    _add_config_args(build)
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    info = wsub.add_parser("info", help="summarise a built world")
    _add_config_args(info)
    verify = wsub.add_parser("verify", help="re-hash every user's audio against the manifest")
    _add_config_args(verify)

    pre = sub.add_parser(
        "pretrain", help="train a generic student or a teacher on the world's pretraining pool"
    )
    _add_config_args(pre)
    pre.add_argument(
        "--role", required=True, choices=["student", "teacher"], help="which model of the config to train"
    )
    pre.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in the output folder"
    )
    pre.add_argument("--out", default=None, help="output folder (default: pretrain.out_dir)")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")

    ad = sub.add_parser("adapt", help="zero-shot test-time adaptation of one user's student (no federation)")
    _add_config_args(ad)
    ad.add_argument("--user", required=True, help="user id, e.g. u0003")
    ad.add_argument(
        "--targets", default="teacher", choices=["teacher", "clean"], help="clean = oracle upper bound"
    )
    ad.add_argument("--out", default=None, help="output folder (default: runs/adapt-<user>)")
    ad.add_argument(
        "--save-student", action="store_true", help="also save the personalized student checkpoint"
    )

    sim = sub.add_parser(
        "simulate", help="federated personalization of every user's student (Flower on the Ray backend)"
    )
    _add_config_args(sim)
    sim.add_argument("--out", default=None, help="run directory (default: runs/simulate-<date>-<time>)")
    sim.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run (or the runs of a --modes folder) from its last completed work, "
        "with its own config.yaml",
    )
    sim.add_argument(
        "--modes",
        default=None,
        metavar="MODE,MODE",
        help="run several delivery modes on the same users in one Ray session, into RUN_DIR/<mode>/ "
        "(default: just federation.mode)",
    )
    sim.add_argument(
        "--ray-address",
        dest="overrides",
        action="append",
        type=lambda address: f"federation.ray_address={address}",
        metavar="ADDRESS",
        help="join an existing Ray cluster (same as --set federation.ray_address=ADDRESS)",
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own logs")

    rep = sub.add_parser(
        "report", help="Markdown + self-contained HTML report with PNG figures from finished run directories"
    )
    rep.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="finished run directories (several compare side by side); a `simulate --modes` folder gives its runs",
    )
    rep.add_argument(
        "--out",
        default=None,
        help="output folder (default: RUN_DIR/report for one RUN_DIR, runs/report-<date>-<time> for several)",
    )

    cfg = sub.add_parser("config", help="show config keys or the resolved config")
    csub = cfg.add_subparsers(dest="action", required=True)
    csub.add_parser("keys", help="every config key with its default and meaning")
    show = csub.add_parser("show", help="print the resolved config")
    _add_config_args(show)
    return parser


def _world_summary(world) -> dict:
    m = world.manifest
    users = m["users"]
    families: dict[str, int] = {}
    for u in users:
        fam = u["place"].get("family", "corpus")
        families[fam] = families.get(fam, 0) + 1
    return {
        "path": str(world.root),
        "users": len(users),
        "adaptation_chunks_per_user": len([s for s in users[0]["segments"] if s["part"] == "adapt"])
        if users
        else 0,
        "test_mixtures_per_user": len([s for s in users[0]["segments"] if s["part"] == "test"])
        if users
        else 0,
        "places_by_family": families,
        "pretrain_speakers": {
            split: sum(1 for e in m["pretrain_speech"] if e["split"] == split) for split in ("train", "val")
        },
        "pretrain_noise_places": {
            split: sum(1 for e in m["pretrain_noise"] if e["split"] == split) for split in ("train", "val")
        },
    }


def cmd_world(args) -> int:
    from fedpse.world.cache import build_world
    from fedpse.world.reader import World

    cfg = load_config(args.config, args.overrides)
    if args.action == "build":
        t0 = time.perf_counter()
        world = build_world(cfg, progress=not args.quiet)
        summary = _world_summary(world)
        summary["wall_seconds"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(summary, indent=1))
    elif args.action == "info":
        print(json.dumps(_world_summary(World.open(cfg)), indent=1))
    else:
        bad = World.open(cfg).verify()
        print("all audio matches the manifest" if not bad else "mismatched files:\n" + "\n".join(bad))
        return 1 if bad else 0
    return 0


def cmd_pretrain(args) -> int:
    from pathlib import Path

    from fedpse.config import dump_config
    from fedpse.distill.pretrain import pretrain
    from fedpse.models.accelerator import role_device
    from fedpse.world.reader import World

    overrides = [*args.overrides, *([f"pretrain.out_dir={args.out}"] if args.out else [])]
    cfg = load_config(args.config, overrides)
    role_device(cfg, "pretrain")  # a device this machine lacks is refused before any work
    world = World.open(cfg)
    out = Path(cfg.pretrain.out_dir).expanduser() / args.role
    dump_config(cfg, out / "config.yaml")
    log_path = out / "log.txt"

    def log(line: str) -> None:
        with open(log_path, "a") as fh:
            fh.write(line + "\n")

    result = pretrain(cfg, args.role, world, resume=args.resume, progress=not args.quiet, log=log)
    print(
        json.dumps(
            {
                "best": str(result.best_path),
                "last": str(result.last_path),
                "steps": result.steps,
                "best_val_si_sdr": round(result.best_val_si_sdr, 3),
            },
            indent=1,
        )
    )
    return 0


def cmd_adapt(args) -> int:
    from pathlib import Path

    from fedpse.config import dump_config
    from fedpse.distill.adapt import personalize_user
    from fedpse.distill.guard import check_guard
    from fedpse.distill.scores import user_seed
    from fedpse.models.accelerator import role_device
    from fedpse.models.zoo import load_student, load_teacher
    from fedpse.results.store import json_text
    from fedpse.world.reader import World

    notes: list[str] = []
    cfg = load_config(args.config, args.overrides, notes)
    for note in notes:  # users in rooms: which models (stdout is the JSON result)
        print(f"fedpse: {note}", file=sys.stderr)
    check_guard(cfg.adapt)  # adapt.guard=dnsmos without DNSMOS installed: said before any work
    device = role_device(cfg, "client")  # fedpse adapt is one user's device-side KD
    world = World.open(cfg)
    world.user(args.user)  # clear error for an unknown user before loading models
    out = Path(args.out or f"runs/adapt-{args.user}")
    dump_config(cfg, out / "config.yaml")
    student, student_card = load_student(cfg)
    teacher, teacher_card = load_teacher(cfg)
    seed = user_seed(cfg.seed, args.user)
    row = personalize_user(
        world, args.user, student, teacher, cfg.adapt, seed=seed, targets=args.targets, device=device
    )
    row["student"], row["teacher"] = student_card.get("arch", "?"), teacher_card.get("arch", "?")
    text = json_text(row, str(out / "result.json"))  # NaN (no value) as null: strict JSON
    (out / "result.json").write_text(text + "\n")
    print(text)
    return 0


def cmd_simulate(args) -> int:
    from pathlib import Path

    from fedpse.federation.interrupts import Interrupted
    from fedpse.federation.prepare import default_run_dir
    from fedpse.federation.runner import resume, simulate_many, summary_table

    if args.resume:
        if args.out or args.modes:
            raise ConfigError("--resume RUN_DIR continues a run where it was: leave out --out and --modes")
        where = Path(args.resume)
    else:
        where = Path(args.out) if args.out else default_run_dir()
    try:
        if args.resume:
            summaries = resume(
                args.resume, args.config, args.overrides, progress=not args.quiet, verbose=args.verbose
            )
        else:
            notes: list[str] = []  # which models users in rooms get, and why (one line)
            if args.modes:
                modes = [m.strip() for m in args.modes.split(",") if m.strip()]
                runs = [
                    (load_config(args.config, [*args.overrides, f"federation.mode={m}"], notes), where / m)
                    for m in modes
                ]
            else:
                runs = [(load_config(args.config, args.overrides, notes), where)]
            for note in dict.fromkeys(notes):
                print(f"fedpse: {note}", flush=True)
            summaries = simulate_many(runs, progress=not args.quiet, verbose=args.verbose)
    except Interrupted as stop:
        print(
            f"fedpse: interrupted ({stop}); nothing of the cut-off work was recorded. "
            f"Continue with: fedpse simulate --resume {where}",
            file=sys.stderr,
        )
        return stop.exit_code
    print(summary_table(summaries))
    for s in summaries:
        failed = len(s["users_failed"])
        names = f" ({', '.join(s['users_failed'][:10])}{', ...' if failed > 10 else ''})" if failed else ""
        print(
            f"{s['mode']}: {s['run_dir']}: {s['users_ok']} of {s['users']} users ok, {failed} failed{names}"
        )
        if s.get("guard"):  # adapt.guard: each user's decision in its last completed round
            kept, decided = s["guard"].get("kept_generic", 0), sum(s["guard"].values())
            print(f"{s['mode']}: guard: kept the generic student for {kept} of {decided} users")
        for label, b in s.get("rt60_bins", {}).items():  # users in rooms: gains per reverberation time
            print(
                f"{s['mode']}: RT60 {label}: {b['scored']}/{b['users']} users scored, mean gain "
                f"{_db(b['mean_gain_db'])}, {b['improved']} improved, teacher lead {_db(b['teacher_lead_db'])}"
            )
    useless = [s for s in summaries if s["users"] and not s["users_ok"]]
    for s in useless:
        print(
            f"fedpse: error: {s['mode']}: no user's round succeeded; see the error column of "
            f"{Path(s['run_dir']) / 'attempts.csv'}",
            file=sys.stderr,
        )
    return 1 if useless else 0


def _db(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f} dB"


def cmd_report(args) -> int:
    import fedpse.federation.strategies  # noqa: F401  each mode registers its colour and order for the report
    from fedpse.results.report import build_report

    report = build_report(args.run_dirs, args.out)
    print(f"report of {len(report.runs)} run(s) ({', '.join(report.runs)}):")
    print(
        f"  {report.markdown}\n  {report.html}\n  {report.out_dir / 'figures'}/ ({len(report.figures)} PNG)"
    )
    return 0


def cmd_config(args) -> int:
    import yaml

    from fedpse.config import config_to_dict

    if args.action == "keys":
        for key, default, help_text in describe():
            print(f"{key} = {default!r}\n    {help_text}")
    else:
        print(yaml.safe_dump(config_to_dict(load_config(args.config, args.overrides)), sort_keys=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "world": cmd_world,
        "pretrain": cmd_pretrain,
        "adapt": cmd_adapt,
        "simulate": cmd_simulate,
        "report": cmd_report,
        "config": cmd_config,
    }
    from fedpse.federation.interrupts import ServerError

    try:
        return handlers[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        # Every user-facing error type in fedpse subclasses ValueError and names the key/file at fault.
        print(f"fedpse: error: {err}", file=sys.stderr)
        return 2
    except ServerError as err:
        print(f"fedpse: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedpse: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``fedpse`` console command: ``main``, then exit with its code. If threads that are not daemons are left
    (Flower's engine threads still waiting on Ray actors that died with a Ctrl-C), Python would wait for them
    forever at exit: they hold nothing to save (the run directory is complete up to the interrupt), so exit now."""
    import os
    import threading

    code = main()
    stuck = [
        t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.main_thread()
    ]
    if stuck:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
