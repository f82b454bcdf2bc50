"""A delivery mode is one file: a user's own module, named in ``federation.plugins``, adds a mode that
``fedpse simulate`` runs end to end and ``fedpse report`` reads, with no change anywhere in fedpse."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

import fedpse
from fedpse.cli import main
from fedpse.config import dump_config
from fedpse.federation.strategies import STRATEGIES
from fedpse.results.modes import MODE_STYLES, mode_style, registered_modes
from fedpse.results.store import RunStore
from tests.federation.test_federation_parts import tiny_run_config

MODULE = "fedpse_test_echo_mode"
MODE = "echo_teacher"
# The whole mode: an identity "teacher". The device uploads its new noisy chunks and gets them back as its
# pseudo-targets, then fine-tunes on them like pseudo_targets (a lower bound on what a teacher adds).
MODE_FILE = '''
    """``echo_teacher``: the device's own noisy chunks come back as its pseudo-targets (an identity teacher)."""

    from flwr.app import RecordDict

    from fedpse.config import Config, ConfigError
    from fedpse.federation.payloads import decode_audio_record, encode_targets
    from fedpse.federation.strategies.base import (
        Conversation,
        DeliveryStrategy,
        Outcome,
        Send,
        UserRound,
        record_adaptation,
    )


    class EchoTeacher(DeliveryStrategy):
        name = "echo_teacher"
        color, order = "#17becf", 6

        @classmethod
        def check(cls, cfg: Config) -> None:
            if cfg.federation.upload_codec != "flac":
                raise ConfigError("federation.upload_codec: echo_teacher echoes lossless uploads only; use flac")

        def conversation(self, job: UserRound) -> Conversation:
            upload = yield from self.request_upload(job)
            content = RecordDict({"task": self.task(job, train_on=job.train_on, targets_from="message")})
            kind = "control"
            if upload is not None:
                uploaded = decode_audio_record(upload.content["audio"])
                echoed = {name: uploaded[name] for name in job.new}
                content["targets"] = encode_targets(echoed, self.fed.targets_precision)
                kind = "pseudo_targets"
            reply = yield Send("train.adapt", content, kind=kind, reply_kind="metrics")
            return record_adaptation(Outcome(job.user), reply)
'''
FAST = [
    "federation.num_rounds=2",
    "federation.chunks_per_round=1",
    "federation.steps_per_round=3",
    "adapt.eval_every=2",
]


@pytest.fixture
def echo_mode(tmp_path, monkeypatch):
    """The mode's module in a folder of its own on the Python path; forgotten again afterwards."""
    folder = tmp_path / "my_modes"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(MODE_FILE))
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop(MODULE, None)
    STRATEGIES.pop(MODE, None)
    MODE_STYLES.pop(MODE, None)


@pytest.mark.ray
def test_a_mode_from_a_plugin_module_runs_end_to_end_and_is_reported(echo_mode, tiny_world, tmp_path, capsys):
    config = dump_config(tiny_run_config(tiny_world, *FAST), tmp_path / "config.yaml")
    run_dir = tmp_path / "run"
    plugin = ["--set", f"federation.plugins=[{MODULE}]", "--set", f"federation.mode={MODE}"]

    # the mode's own check runs with the others, before any work
    lossy = ["--set", "federation.upload_codec=lossy"]
    assert main(["simulate", str(config), "--out", str(run_dir), "--quiet", *plugin, *lossy]) == 2
    assert "echo_teacher echoes lossless uploads only" in capsys.readouterr().err
    assert not run_dir.exists()

    assert main(["simulate", str(config), "--out", str(run_dir), "--quiet", *plugin]) == 0
    store = RunStore(run_dir)
    summary = store.read_summary()
    assert summary["mode"] == MODE and summary["users_ok"] == summary["users"] == 3
    assert {r["status"] for r in store.read_table("attempts")} == {"ok"}
    assert {r["kind"] for r in store.read_table("ledger")} >= {"noisy_audio", "pseudo_targets", "metrics"}
    assert all(float(r["steps"]) > 0 for r in store.read_table("evaluations"))

    assert mode_style(MODE).color == "#17becf" and registered_modes()[-1] == MODE  # drawn as the module says
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    assert MODE in (tmp_path / "report" / "report.md").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["mode"] == MODE


def test_fedpse_itself_never_names_the_new_mode(echo_mode):
    sources = Path(fedpse.__file__).parent.rglob("*.py")
    assert not [p for p in sources if MODE in p.read_text() or MODULE in p.read_text()]


def test_a_plugin_that_cannot_be_imported_is_a_config_error(tiny_world, tmp_path, capsys):
    config = dump_config(tiny_run_config(tiny_world), tmp_path / "config.yaml")
    args = [
        "simulate",
        str(config),
        "--out",
        str(tmp_path / "run"),
        "--set",
        "federation.plugins=[no_such_mode_pkg]",
    ]
    assert main(args) == 2
    assert "federation.plugins: cannot import 'no_such_mode_pkg'" in capsys.readouterr().err
