"""The commands the project's notes give for comparing runs work on the records they name."""
import glob
import itertools
import os
import re
import shlex

import pytest

from conftest import ROOT

import plot_glimpses as pg  # noqa: E402

NOTES = ["README.md", "logs/README.md", "benchmarks/README.md"] + sorted(
    glob.glob(os.path.join(ROOT, "logs", "tuning", "**", "*.md"), recursive=True))


def braces(word):
    """Shell brace expansion of one word: a{1,2}b -> [a1b, a2b]."""
    parts = re.split(r"\{([^{}]*)\}", word)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def compare_commands():
    """(note, argv) of every `python plot_glimpses.py --compare ...` in the notes, its words
    brace-expanded; commands with a placeholder (<name>) are left out."""
    found = []
    for note in NOTES:
        path = os.path.join(ROOT, note)
        text = open(path).read()
        for m in re.finditer(r"`python plot_glimpses\.py\s+(--compare[^`]*)`", text):
            if "<" in m.group(1):
                continue
            argv = [w for word in shlex.split(m.group(1)) for w in braces(word)]
            found.append((os.path.relpath(path, ROOT), argv))
    return found


COMMANDS = compare_commands()


def test_the_notes_have_compare_commands():
    assert len(COMMANDS) >= 5


@pytest.mark.parametrize("note,argv", COMMANDS,
                         ids=[f"{n}:{i}" for i, (n, _) in enumerate(COMMANDS)])
def test_every_compare_command_in_the_notes_runs(note, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert pg.main(argv + ["--out", str(tmp_path / "compare.png")]) == 0, note
    assert "best val (epoch)" in capsys.readouterr().out
