"""Resuming a run: a run directory is also the run's memory, so a killed run continues from its last committed work.

A user's round *commits* when its ``attempts.csv`` row is written (after its evaluation row, if it completed).
``resume_point`` reads what the run directory holds, keeps the committed work only (the ``History`` the server
replays), and undoes what rounds that did not commit left in device and server storage (``RoundUndo``, the note
each user's round keeps while it runs). A fresh run goes through the same code with an empty directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from fedpse.federation.accounts import SCORE_KEYS
from fedpse.federation.plan import RunPlan
from fedpse.results.store import RunDirError, RunStore


@dataclasses.dataclass
class History:
    """What a run directory already holds, as a (resumed) run replays it: committed user rounds only."""

    attempts: dict[int, dict[str, dict]] = dataclasses.field(default_factory=dict)  # round -> user -> row
    evaluations: dict[tuple[int, str], dict] = dataclasses.field(default_factory=dict)
    rounds: dict[int, dict] = dataclasses.field(default_factory=dict)
    ledger: list[dict] = dataclasses.field(default_factory=list)

    @property
    def registered(self) -> bool:
        """Registration completed before anything else did, so any committed work means it was recorded whole."""
        return bool(self.attempts or self.rounds)


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else float("nan")


def replayed(
    store: RunStore, user: str, round_number: int, attempt: dict, evaluation: dict | None
) -> tuple[dict, dict[str, float]]:
    """A committed user round as the live run accounted it, from its ``attempts.csv`` row (and ``evaluations.csv``
    row, if it completed): (attempt, scores)."""
    scores = {}
    if attempt["status"] == "ok":
        if evaluation is None:
            raise RunDirError(
                f"{store.path('evaluations')}: no row for user {user} in round {round_number}, "
                "whose attempt completed; the table is damaged"
            )
        scores = {k: float(evaluation[k]) for k in SCORE_KEYS if evaluation.get(k, "") != ""}
    parsed = {
        "status": attempt["status"],
        "error": attempt["error"],
        "injected": attempt["injected"],
        "adapted": int(attempt["adapted"]),
        "steps": int(attempt["steps"]),
        "sim_seconds": float(attempt["sim_seconds"]),
        "deadline_s": _number(attempt["deadline_s"]),
    }
    if attempt.get("guard_decision"):  # adapt.guard on (a run directory from before the guard has no column)
        parsed["guard_decision"] = attempt["guard_decision"]
        for key in ("guard_generic_db", "guard_personalized_db", "guard_teacher_lead_db", "guard_macs"):
            parsed[key] = _number(attempt[key])
    return parsed, scores


def resume_point(store: RunStore, plan: RunPlan) -> History:
    """Read what the run directory holds, keep only committed work (rewriting the tables without the rest) and undo
    the storage effects of user rounds that did not commit; the caller rebuilds its ledger from ``History.ledger``."""
    attempts = store.read_table("attempts")
    units = {(int(a["round"]), a["user"]) for a in attempts}
    if len(units) != len(attempts):
        raise RunDirError(f"{store.path('attempts')}: a (round, user) appears twice; the table is damaged")
    history = History(rounds={int(r["round"]): r for r in store.read_table("rounds")})
    for a in attempts:
        history.attempts.setdefault(int(a["round"]), {})[a["user"]] = a
    evaluations = [e for e in store.read_table("evaluations") if (int(e["round"]), e["user"]) in units]
    history.evaluations = {(int(e["round"]), e["user"]): e for e in evaluations}
    registered = history.registered
    history.ledger = [
        row
        for row in store.read_table("ledger")
        if (int(row["round"]), row["user"]) in units or (row["round"] == "0" and registered)
    ]
    kept = {"attempts": attempts, "evaluations": evaluations, "ledger": history.ledger}
    kept["rounds"] = list(history.rounds.values())
    for table, rows in kept.items():
        if store.path(table).exists():
            store.write_table(table, rows)  # without rows of interrupted work (and any line cut short)
    for user in plan.users:
        undo = RoundUndo(plan, user)
        pending = undo.pending_round()
        committed = history.attempts.get(pending, {}).get(user) if pending is not None else None
        if committed is not None and committed["status"] == "ok":
            undo.commit()
        else:
            undo.rollback()
    return history


class RoundUndo:
    """The simulator's undo note for one user's round (simulation machinery, not part of the device).

    ``begin`` notes every file of the user's device storage and of the server's storage about the user
    (``RUN_DIR/server/<user>/``) before the round, hard-linking each into ``RUN_DIR/undo/<user>/`` (free, and the
    files a round replaces, checkpoints, are replaced atomically, so the link keeps the old content; targets and
    uploads are only ever created). ``rollback`` makes the storage what it was: files created during the round are
    deleted, replaced ones restored. A failed, late or interrupted round thus leaves no trace in any student,
    target or upload; only a downloaded teacher stays cached (its download happened and was charged). ``commit``
    drops the note. Both are idempotent, so a run killed halfway through either is finished on resume.
    """

    KEPT_ON_ROLLBACK = ("teacher.pt", "teacher.pt.card.json")  # a device's teacher cache (teacher_weights)
    KEPT_DIR = "teacher_onnx/"  # ... or its cached ONNX teacher

    def __init__(self, plan: RunPlan, user_id: str):
        self.root = plan.run_dir / "undo" / user_id
        self.areas = {"device": plan.device_dir(user_id), "server": plan.server_dir(user_id)}

    @property
    def _note(self) -> Path:
        return self.root / "note.json"

    def pending_round(self) -> int | None:
        """The round whose note is still open (begun, neither committed nor rolled back), if any."""
        return int(json.loads(self._note.read_text())["round"]) if self._note.is_file() else None

    def _files(self, area: str) -> dict[str, tuple[int, int, int]]:
        base = self.areas[area]
        if not base.is_dir():
            return {}
        out = {}
        for path in base.rglob("*"):
            if path.is_file():
                st = path.stat()
                out[path.relative_to(base).as_posix()] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return out

    def begin(self, round_number: int) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)  # a note whose commit was cut short by a kill
        files = {}
        for area, base in self.areas.items():
            files[area] = self._files(area)
            for rel in files[area]:
                keep = self.root / "keep" / area / rel
                keep.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(base / rel, keep)
                except OSError:  # a filesystem without hard links
                    shutil.copy2(base / rel, keep)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._note.with_suffix(".tmp")
        tmp.write_text(json.dumps({"round": round_number, "files": files}))
        os.replace(tmp, self._note)

    def commit(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def rollback(self) -> None:
        """Restore the storage noted by ``begin`` (no-op without an open note)."""
        if not self._note.is_file():
            shutil.rmtree(self.root, ignore_errors=True)
            return
        before = json.loads(self._note.read_text())["files"]
        for area, base in self.areas.items():
            noted = {rel: tuple(facts) for rel, facts in before.get(area, {}).items()}
            for rel, facts in self._files(area).items():
                if rel not in noted:
                    if rel not in self.KEPT_ON_ROLLBACK and not rel.startswith(self.KEPT_DIR):
                        (base / rel).unlink()
                elif facts != noted[rel]:
                    self._restore(area, rel, facts[0] == noted[rel][0])
            for rel in noted:
                if not (base / rel).exists():
                    self._restore(area, rel, False)
        self.commit()

    def _restore(self, area: str, rel: str, same_inode: bool) -> None:
        base, keep = self.areas[area], self.root / "keep" / area / rel
        if same_inode:  # rewritten in place: the kept hard link changed with it
            raise RuntimeError(f"{base / rel}: rewritten in place during the round; cannot undo it")
        tmp = (base / rel).with_name((base / rel).name + ".undo")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(keep, tmp)
        os.replace(tmp, base / rel)
