"""The world build's worker processes: a pool started once per build, the job table, and errors that come back
from a worker as raised there (or as their message, when they cannot be pickled)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from fedpse.config import Config, config_to_dict
from fedpse.world.reader import WorldError, world_dir
from fedpse.world.render import (
    _init_worker,
    _job_babble,
    _job_pretrain_noise,
    _job_pretrain_speech,
    _job_user,
)
from fedpse.world.screening import _job_check_place, _job_check_speaker

_JOBS = {
    "babble": _job_babble,
    "user": _job_user,
    "pretrain_speech": _job_pretrain_speech,
    "pretrain_noise": _job_pretrain_noise,
    "check_speaker": _job_check_speaker,
    "check_place": _job_check_place,
}


def _run_job(job: dict) -> dict:
    try:
        return _JOBS[job["kind"]](job)
    except Exception as err:
        if _survives_pickling(err):
            raise
        # An error that cannot be rebuilt in the parent would be lost (or hang a pool): send its message instead.
        portable = (
            ValueError(str(err))
            if isinstance(err, ValueError)
            else RuntimeError(f"{type(err).__name__}: {err}")
        )
        raise portable from None


def _survives_pickling(err: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return False
    return True


class _Pool:
    """The build's worker processes, started once and used for every batch of jobs (checks, babble, users).

    ``world.workers == 1`` runs jobs in this process. In processes, the first job that fails cancels the rest and
    its error is raised here as it was raised there; a worker that dies (e.g. killed for memory) is a ``WorldError``.
    """

    def __init__(self, cfg: Config, root: Path, progress: bool, workers: int | None = None):
        self.cfg_dict, self.root, self.progress = config_to_dict(cfg), root, progress
        self.workers = workers or cfg.world.workers
        self._executor: ProcessPoolExecutor | None = None

    def run(self, jobs: list[dict], desc: str) -> list[dict]:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not self.progress, dynamic_ncols=True)
        try:
            if self.workers == 1 or len(jobs) <= 1:
                _init_worker(self.cfg_dict, str(self.root))
                results = []
                for job in jobs:
                    results.append(_run_job(job))
                    bar.update()
                return results
            return self._run_in_processes(jobs, bar)
        finally:
            bar.close()

    def _run_in_processes(self, jobs: list[dict], bar) -> list[dict]:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=mp.get_context("spawn"),  # fresh interpreters: no inherited torch/espeak state
                initializer=_init_worker,
                initargs=(self.cfg_dict, str(self.root)),
            )
        futures = [self._executor.submit(_run_job, job) for job in jobs]
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    fut.result()  # the first failed job raises here, at once
                bar.update(len(done))
        except BrokenProcessPool:
            raise WorldError(
                "a world-build worker process died (killed for memory?); lower world.workers and run "
                "`fedpse world build` again to resume"
            ) from None
        finally:
            for fut in pending:
                fut.cancel()
        return [fut.result() for fut in futures]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run(pool: _Pool | None, cfg: Config, jobs: list[dict], desc: str) -> list[dict]:
    """``jobs`` in ``pool``, or in this process when planning runs without one."""
    if pool is None:
        pool = _Pool(cfg, world_dir(cfg), progress=False, workers=1)
    return pool.run(jobs, desc)
