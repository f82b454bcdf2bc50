"""readme_results: the result tables of RESULTS.md and README.md, generated from the studies' result files (never
typed by hand).

    python simulations/readme_results.py                # rewrite the generated blocks of README.md and RESULTS.md
    python simulations/readme_results.py --check        # exit 1 (and say which block of which file) when one is stale
    python simulations/readme_results.py RESULTS.md     # only the named Markdown file(s)

A generated block is everything between a start marker naming the study and the folder of its results and the end
marker:

    <!-- results: paper_table simulations/results/paper_table -->
    …generated text…
    <!-- /results -->

RESULTS.md holds every result with its command and wall time next to it; README.md repeats the headline block
(``premise``). What each study contributes (the folder is relative to the repository root):

- ``paper_table``: ``table.md`` as written by ``simulations/paper_table.py``;
- ``premise``: the 2×32 student at 0 and 5 dB with every teacher, from the paper table's ``results.json``
  (``paper_table.md_premise``: the issue's table in the paper's shape and the teachers' lead over the student);
- ``public_teachers``: the public ONNX teachers (NSNet2, DTLN) beside the GRU teachers on the same users, from the
  paper table's ``results.json`` (``paper_table.md_public_teachers``);
- ``public_worlds``: the public ONNX teachers on the default world and on the held-out-synthesizer world, one
  compact table (``paper_table_summary.md_public_teachers_worlds``); its folder is the results root, holding
  ``paper_table/results.json`` (default world) and ``heldout/synth/rows.jsonl``;
- ``teacher_lead``: every result file of ``simulations/teacher_lead.py`` in the folder, one table (a teacher
  checkpoint's lead over the generic 2×32 student per world and SNR; ``teacher_lead.md_folder``);
- ``steps_sweep``: ``table.md`` of a ``paper_table.py --sweep … --sweep-only`` run;
- ``mask_ceiling``: ``table.md`` of ``simulations/mask_ceiling.py``;
- ``pool_gap``: ``table.md`` of ``simulations/pool_gap.py``;
- ``privacy_compute``: the rows of ``results.json`` at the largest adaptation minutes (every mode × precision ×
  codec) with the best cell per cost, in ``simulations/privacy_compute.py``'s own table format (all minutes stay
  in that folder's ``tradeoff.md``);
- ``scale``: ``scale.md`` as written by ``simulations/scale.py``;
- ``personalization``: ``table.md`` of ``simulations/personalization.py`` (plain KD vs guard vs teacher refresh);
- ``heldout``: ``table.md`` of ``simulations/heldout.py`` (teachers on worlds no model trained on);
- ``dnsmos_rank``: ``table.md`` of ``simulations/dnsmos_rank.py`` (DNSMOS vs SI-SDR rank correlation; generated
  from the committed file, so checking it needs no DNSMOS package);
- ``dereverb``: ``table.md`` of ``simulations/dereverb.py`` (users in rooms per RT60 bin and input SNR: the
  dereverberation models against the denoising-only ones).

``tests/simulations/test_simulations.py`` runs the check over every file of ``TARGETS``, so a table that differs from the
committed result files fails the test suite: re-run the study (its command is next to each block), then this
script, and commit both.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from studylib import REPO, StudyError, run_main

TARGETS = ("README.md", "RESULTS.md")  # the files whose generated blocks are rewritten and checked by default
STUDIES = (
    "paper_table",
    "premise",
    "public_teachers",
    "public_worlds",
    "steps_sweep",
    "mask_ceiling",
    "pool_gap",
    "privacy_compute",
    "scale",
    "personalization",
    "heldout",
    "dnsmos_rank",
    "dereverb",
    "teacher_lead",
)
# studies whose block is their results folder's table.md, as the study wrote it
TABLE_MD_STUDIES = (
    "paper_table",
    "steps_sweep",
    "mask_ceiling",
    "pool_gap",
    "personalization",
    "heldout",
    "dnsmos_rank",
    "dereverb",
)
START = re.compile(r"^<!-- results: (?P<study>\S+) (?P<folder>\S+) -->$")
END = "<!-- /results -->"


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise StudyError(f"{path}: missing ({what}); run the study first") from None
    except OSError as err:
        raise StudyError(f"{path}: cannot read it ({err.strerror})") from None


def _privacy_compute(folder: Path, label: str) -> str:
    import privacy_compute

    path = folder / "results.json"
    try:
        data = json.loads(_read(path, "the privacy_compute study's results"))
        rows, meta = data["rows"], data["meta"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise StudyError(f"{path}: not a privacy_compute results file ({err})") from None
    if not rows:
        raise StudyError(f"{path}: holds no rows")
    most = max(r["minutes"] for r in rows)
    at_most = [r for r in rows if r["minutes"] == most]
    return (
        f"Rows at {most:g} min of unlabeled audio per user (every minute count: `{label}/tradeoff.md`). "
        + privacy_compute.markdown(at_most, meta)
    )


def _paper_results(folder: Path, key: str) -> dict:
    path = folder / "results.json"
    try:
        results = json.loads(_read(path, "the paper table's results"))
    except json.JSONDecodeError as err:
        raise StudyError(f"{path}: not a paper_table results file ({err})") from None
    if not isinstance(results, dict) or key not in results:
        raise StudyError(f"{path}: not a paper_table results file (no {key!r})")
    return results


def _premise(folder: Path) -> str:
    import paper_table

    return paper_table.md_premise(_paper_results(folder, "table")["table"])


def _public_teachers(folder: Path) -> str:
    import paper_table

    return paper_table.md_public_teachers(_paper_results(folder, "rows"))


def _public_worlds(folder: Path) -> str:
    import paper_table

    path = folder / "heldout" / "synth" / "rows.jsonl"
    try:
        synth = [
            json.loads(line) for line in _read(path, "the held-out synth world's rows").splitlines() if line
        ]
    except json.JSONDecodeError as err:
        raise StudyError(f"{path}: not a paper_table rows file ({err})") from None
    default = _paper_results(folder / "paper_table", "rows")
    worlds = {"default": default["rows"], "synth (Piper)": synth}
    return paper_table.md_public_teachers_worlds(worlds, costs=default.get("teachers"))


def generate(study: str, folder: Path, label: str) -> str:
    """The text of one generated block (without its markers)."""
    if study not in STUDIES:
        raise StudyError(f"unknown study {study!r} (expected {', '.join(STUDIES[:-1])} or {STUDIES[-1]})")
    if study in TABLE_MD_STUDIES:
        return _read(folder / "table.md", f"the {study} table")
    if study == "premise":
        return _premise(folder)
    if study == "public_teachers":
        return _public_teachers(folder)
    if study == "public_worlds":
        return _public_worlds(folder)
    if study == "teacher_lead":
        import teacher_lead

        return teacher_lead.md_folder(folder)
    if study == "scale":
        return _read(folder / "scale.md", "the scale study's table")
    return _privacy_compute(folder, label)


def render(readme: str, repo: Path = REPO, name: str = "README.md") -> tuple[str, list[str]]:
    """``readme`` with every generated block regenerated, and the names of the blocks that changed."""
    lines = readme.split("\n")
    out: list[str] = []
    changed: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        match = START.match(line.strip())
        i += 1
        if not match:
            continue
        start = i
        while i < len(lines) and lines[i].strip() != END:
            if START.match(lines[i].strip()):
                break
            i += 1
        if i == len(lines) or lines[i].strip() != END:
            raise StudyError(f"{name} line {start}: block '{match['study']}' has no closing {END}")
        folder = (repo / match["folder"]).resolve()
        body = "\n" + generate(match["study"], folder, match["folder"]).strip("\n") + "\n"
        old = "\n".join(lines[start:i])
        if old.strip("\n") != body.strip("\n"):
            changed.append(f"{match['study']} ({match['folder']}, {name} line {start})")
        out.extend(body.split("\n"))
        out.append(lines[i])
        i += 1
    return "\n".join(out), changed


def blocks(text: str) -> list[str]:
    """The studies of the generated blocks in ``text``, in order."""
    return [m["study"] for m in (START.match(line.strip()) for line in text.split("\n")) if m]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="readme_results", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help=f"Markdown files with generated blocks (default: {' and '.join(TARGETS)} of the repository)",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a block is out of date"
    )
    args = parser.parse_args(argv)
    paths = [Path(f).resolve() for f in args.files] or [REPO / name for name in TARGETS]
    changed: list[str] = []
    rendered: list[tuple[Path, str]] = []
    for path in paths:
        name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        if not path.is_file():
            raise StudyError(f"{name}: no such file (expected Markdown with generated result blocks)")
        text, stale = render(path.read_text(), name=name)
        changed += stale
        rendered.append((path, text))
    if args.check:
        if changed:
            sys.exit(
                "readme_results: out of date: "
                + "; ".join(changed)
                + " — run python simulations/readme_results.py"
            )
        print(
            f"readme_results: every generated block of {', '.join(str(p.name) for p in paths)} is up to date"
        )
    else:
        for path, text in rendered:
            path.write_text(text)
        print(
            f"readme_results: {len(changed)} block(s) rewritten"
            + (": " + "; ".join(changed) if changed else "")
        )
    return changed


if __name__ == "__main__":
    run_main("readme_results", main)
