"""An attempt's files: which declared outputs matched, and which matched nothing (real files)."""

from __future__ import annotations

import os

from spotrun_worker.workspace import Workspace


def test_outputs_that_match_no_file_are_named_and_the_rest_are_collected_once(tmp_path):
    work = Workspace(tmp_path / "work", 1).create()
    (work.workdir / "result.json").write_text("{}")
    (work.workdir / "parts").mkdir()
    (work.workdir / "parts" / "a.csv").write_text("a")
    (work.workdir / "parts" / "b.csv").write_text("b")
    (work.workdir / "empty-dir").mkdir()

    files, unmatched = work.match_outputs(["result.json", "parts/*.csv", "**/*.csv", "pi.txt", "empty-dir",
                                           "logs/*.log"])

    assert [p.relative_to(work.workdir).as_posix() for p in files] == ["result.json", "parts/a.csv", "parts/b.csv"]
    # a directory is not an output file, and a pattern matching only one is as missing as a name matching nothing
    assert unmatched == ["pi.txt", "empty-dir", "logs/*.log"]


def test_a_link_out_of_the_work_directory_is_no_output(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    work = Workspace(tmp_path / "work", 1).create()
    os.symlink(outside, work.workdir / "result.txt")
    assert work.match_outputs(["result.txt"]) == ([], ["result.txt"])


def test_the_attempts_own_files_live_under_dot_spotrun(tmp_path):
    work = Workspace(tmp_path / "work", 3).create()
    assert work.log_path == tmp_path / "work" / ".spotrun" / "attempt-3.log"
    assert work.log_tail() == ""
    work.log_path.write_bytes(b"x" * 5000 + b"end\n")
    assert work.log_tail(10) == "xxxxxxend\n"
