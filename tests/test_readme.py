"""The README's code runs as written: every ```python block is executed; every command a user copies
names only what a clone has (configs in the repository and their variants, built-in data, their own
files, tensorflow-datasets)."""

import re
from pathlib import Path

import pytest

from jaxgen.config import load_config
from jaxgen.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^([ \t]*)```(\w*)[ \t]*\n(.*?)^\1```[ \t]*$", re.S | re.M)
# a repository file a command names, and the ':VARIANT' after a config file's name
NAMED_FILE = re.compile(r"(?<![\w/])((?:configs|benchmarks)/[\w./-]+\.(?:py|sh))(:\w*)?")


def blocks(lang):
    """``(first line number, code)`` of every fenced block in ``lang``, indentation removed."""
    out = []
    for m in FENCE.finditer(README):
        if m.group(2) == lang:
            indent = len(m.group(1))
            code = "".join(line[indent:] for line in m.group(3).splitlines(keepends=True))
            out.append((README.count("\n", 0, m.start()) + 2, code))
    return out


PYTHON = blocks("python")
SHELL = blocks("bash")


def test_blocks_are_found():
    # the extraction itself can fail silently: pin how many blocks the README has
    assert len(PYTHON) >= 2 and len(SHELL) >= 6


@pytest.mark.parametrize("line,code", PYTHON, ids=[f"README.md:{n}" for n, _ in PYTHON])
def test_python_block_runs(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes lands in a temporary directory
    namespace = {"__name__": "__readme__"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)


def test_commands_name_only_what_a_clone_has():
    lines = [ln for _, code in SHELL for ln in code.replace("\\\n", " ").splitlines()]
    commands = [ln for ln in lines if re.search(r"(^|&&|\")\s*(jaxgen|python|pip) ", ln)]
    assert len(commands) > 10
    for cmd in commands:
        assert "shared/data" not in cmd, (
            cmd
        )  # data beside the development checkout, not on a user's clone
        for path, variant in NAMED_FILE.findall(cmd):
            assert (ROOT / path).is_file(), (
                f"{cmd!r} names {path}, which the repository does not have"
            )
            if variant:  # configs/F.py:VARIANT: F must have that variant
                try:
                    load_config(f"{ROOT / path}{variant}")
                except UserError as e:
                    pytest.fail(f"{cmd!r}: {e}")


def test_the_readme_shows_ci_s_test_command():
    """`.ci/run` runs exactly the README's test command: the last line of the script appears
    as a line of a shell block, word for word."""
    script = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    lines = {ln.strip() for _, code in SHELL for ln in code.splitlines()}
    assert script in lines, f"the README does not show CI's command: {script}"
