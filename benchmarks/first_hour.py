"""A new user's first hour, replayed: a fresh clone, the README's commands, Ctrl-C and bad input.

    python benchmarks/first_hour.py                  # everything (~10 minutes on 2 CPU cores)
    python benchmarks/first_hour.py --skip quickstart,tests

On a fresh clone of this checkout's HEAD in a temporary directory (no ``../shared`` beside it), it
checks and records what a user meets first:

* quickstart: the README's char-RNN command (3 minutes on the built-in text), then the sample; the
  text must have no run of more than 5 identical non-letter characters;
* tests: the README's test command passes with no ``../shared``; wall time and counts;
* ctrl-c: Ctrl-C at 1 s, during the first compilation and mid-run each exit with 130 and no
  traceback, and a rerun resumes from the step that was saved;
* bad input: each exits with 2, prints one line, and leaves the files as they were.

The clone runs with the installed environment (``PYTHONPATH`` points at the clone). Results go to
``benchmarks/results/first_hour.{json,md}``; the exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_S = 180


def _env(clone: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(clone), PYTHONUNBUFFERED="1")


def _jaxgen(clone: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "jaxgen", *args]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if ".git" in p.parts or "__pycache__" in p.parts or ".pytest_cache" in p.parts:
            continue
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def longest_non_letter_run(text: str) -> tuple[int, str]:
    """The longest run of one repeated character that is not a letter or whitespace."""
    best, char = 0, ""
    for m in re.finditer(r"(.)\1*", text, flags=re.S):
        c = m.group(1)
        if not c.isalpha() and not c.isspace() and len(m.group(0)) > best:
            best, char = len(m.group(0)), c
    return best, char


def check_quickstart(clone: Path, work: Path) -> dict:
    w = work / "quickstart"
    t0 = time.time()
    r = subprocess.run(
        _jaxgen(
            clone,
            "train",
            "--config",
            "configs/charrnn.py:cpu",
            "--workdir",
            str(w),
            f"--config.train.time_budget_s={QUICKSTART_S}",
            "--quiet",
        ),
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
    )
    train_s = time.time() - t0
    s = subprocess.run(
        _jaxgen(clone, "sample", "--workdir", str(w), "--prime", "The ", "--length", "400"),
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
    )
    run, char = longest_non_letter_run(s.stdout)
    steps = (
        [json.loads(x)["step"] for x in (w / "metrics.jsonl").read_text().splitlines()]
        if r.returncode == 0
        else []
    )
    val = (
        [json.loads(x).get("val_loss") for x in (w / "metrics.jsonl").read_text().splitlines()]
        if steps
        else []
    )
    val = [v for v in val if v is not None]
    ok = r.returncode == 0 and s.returncode == 0 and run <= 5 and len(s.stdout) >= 400
    return {
        "ok": ok,
        "train_wall_s": round(train_s, 1),
        "steps": max(steps) if steps else 0,
        "val_loss": val[-1] if val else None,
        "sample": s.stdout,
        "longest_non_letter_run": run,
        "run_char": char,
        "stderr_tail": (r.stderr + s.stderr)[-500:] if not ok else "",
    }


def check_tests(clone: Path) -> dict:
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "tests"],
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
    )
    wall = time.time() - t0
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    return {
        "ok": r.returncode == 0,
        "wall_s": round(wall, 1),
        "summary": tail,
        "shared_beside_clone": (clone.parent / "shared").exists(),
    }


def _interrupt(clone: Path, w: Path, when: str) -> dict:
    cmd = _jaxgen(
        clone,
        "train",
        "--config",
        "configs/charrnn.py:cpu",
        "--workdir",
        str(w),
        "--quiet",
        "--config.train.log_every=1",
        "--config.train.eval_every=100000",
    )
    t0 = time.time()
    proc = subprocess.Popen(
        cmd, cwd=clone, env=_env(clone), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = ""
    if when == "1s":
        time.sleep(1.0)
    elif when == "compile":  # the trainer's first line comes just before the first step compiles
        first = proc.stdout.readline()
        time.sleep(0.5)
    else:
        m = w / "metrics.jsonl"
        while proc.poll() is None and not (m.exists() and len(m.read_text().splitlines()) >= 5):
            time.sleep(0.1)
    at = time.time() - t0
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    out = first + out
    m = re.search(r"stopping at step (\d+): interrupted", out)
    saved = int(m.group(1)) if m else 0
    clean = proc.returncode == 130 and "Traceback" not in err and "Fatal Python error" not in err
    rerun = subprocess.run(
        cmd[:-2] + [f"--config.train.steps={saved + 2}", "--config.train.eval_every=100000"],
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
    )
    resumed = (
        (f"resumed from step {saved}" in rerun.stdout) if saved else ("resumed" not in rerun.stdout)
    )
    return {
        "when": when,
        "signal_at_s": round(at, 1),
        "exit": proc.returncode,
        "clean": clean,
        "saved_step": saved,
        "message": (out.strip().splitlines() or [""])[-1],
        "rerun_exit": rerun.returncode,
        "rerun_resumed_from_saved_step": resumed,
        "ok": clean and rerun.returncode == 0 and resumed,
    }


def check_ctrl_c(clone: Path, work: Path) -> dict:
    rows = [
        _interrupt(clone, work / f"ctrl_c_{when}", when) for when in ("1s", "compile", "mid-run")
    ]
    return {"ok": all(r["ok"] for r in rows), "cases": rows}


BAD_INPUTS = [
    (
        "negative steps",
        [
            "train",
            "--config",
            "configs/charrnn.py:smoke",
            "--workdir",
            "{w}",
            "--config.train.steps=-5",
        ],
    ),
    ("README as config", ["train", "--config", "README.md", "--workdir", "{w}"]),
    (
        "README as workdir",
        ["train", "--config", "configs/charrnn.py:smoke", "--workdir", "README.md"],
    ),
    ("missing config", ["train", "--config", "configs/nope.py", "--workdir", "{w}"]),
    (
        "mistyped field",
        [
            "train",
            "--config",
            "configs/charrnn.py:smoke",
            "--workdir",
            "{w}",
            "--config.train.stesp=5",
        ],
    ),
    (
        "mistyped config variant",
        ["train", "--config", "configs/charrnn.py:smok", "--workdir", "{w}"],
    ),
    (
        "image size the DCGAN cannot take",
        [
            "train",
            "--config",
            "configs/dcgan_mnist.py",
            "--workdir",
            "{w}",
            "--config.model.image_size=30",
        ],
    ),
    ("negative temperature", ["sample", "--workdir", "{w}", "--temperature", "-1"]),
    ("top_p above 1", ["sample", "--workdir", "{w}", "--top_p", "1.5"]),
    ("sample an empty workdir", ["sample", "--workdir", "{w}"]),
    (
        "eval samples that do not exist",
        ["eval", "--samples", "{w}/none.npy", "--data_source", "builtin"],
    ),
]


def check_bad_inputs(clone: Path, work: Path) -> dict:
    rows = []
    w = work / "empty_workdir"
    w.mkdir()
    for name, args in BAD_INPUTS:
        before = _tree_hash(clone), _tree_hash(work)
        r = subprocess.run(
            _jaxgen(clone, *[a.format(w=w) for a in args]),
            cwd=clone,
            env=_env(clone),
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = r.stderr.strip().splitlines()
        untouched = (_tree_hash(clone), _tree_hash(work)) == before
        ok = r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr and untouched
        rows.append(
            {
                "case": name,
                "exit": r.returncode,
                "lines": len(lines),
                "untouched": untouched,
                "message": lines[-1] if lines else "",
                "ok": ok,
            }
        )
    return {"ok": all(r["ok"] for r in rows), "cases": rows}


def _ran(part: dict) -> str:
    return f"Commit {part.get('commit', '?')}, {part.get('date', '?')}.\n"


def _markdown(res: dict) -> str:
    out = [
        "# A new user's first hour, replayed",
        "",
        "`python benchmarks/first_hour.py` on fresh clones "
        f"({os.cpu_count()} CPU cores; each part names "
        f"the commit it ran on). Every check: **{'passed' if res['ok'] else 'FAILED'}**.",
        "",
    ]
    if "quickstart" in res:
        q = res["quickstart"]
        out += [
            "## Quick start (README's first command, 3 minutes)",
            "",
            _ran(q),
            f"{q['steps']} steps in {q['train_wall_s']:.0f} s, "
            f"validation loss {q['val_loss']:.4f} nats/char; longest run "
            f"of one non-letter character in the sample: {q['longest_non_letter_run']} "
            f"({q['run_char']!r}); limit 5.",
            "",
            "```text",
            q["sample"].rstrip(),
            "```",
            "",
        ]
    if "tests" in res:
        t = res["tests"]
        out += [
            "## The README's test command, no ../shared",
            "",
            _ran(t),
            f"`{t['summary']}` in {t['wall_s']:.0f} s wall "
            f"(exit {'0' if t['ok'] else 'non-zero'}).",
            "",
        ]
    if "ctrl_c" in res:
        out += [
            "## Ctrl-C",
            "",
            _ran(res["ctrl_c"]),
            "| when | signal at | exit | saved step | rerun resumed there | last line |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            f"| {c['when']} | {c['signal_at_s']} s | {c['exit']} | {c['saved_step']} | "
            f"{c['rerun_resumed_from_saved_step']} | {c['message']} |"
            for c in res["ctrl_c"]["cases"]
        ]
        out += [""]
    if "bad_inputs" in res:
        out += [
            "## Bad input",
            "",
            _ran(res["bad_inputs"]),
            "| case | exit | lines | files untouched | message |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {c['case']} | {c['exit']} | {c['lines']} | {c['untouched']} | {c['message']} |"
            for c in res["bad_inputs"]["cases"]
        ]
        out += [""]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--skip", default="", help="comma-separated: quickstart, tests, ctrl_c, bad_inputs"
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument(
        "--render", action="store_true", help="only rewrite first_hour.md from first_hour.json"
    )
    args = p.parse_args(argv)
    if args.render:
        res = json.loads((Path(args.out) / "first_hour.json").read_text())
        (Path(args.out) / "first_hour.md").write_text(_markdown(res) + "\n")
        return 0
    skip = set(filter(None, args.skip.split(",")))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    prev = Path(args.out) / "first_hour.json"
    # parts skipped this time keep their last recorded result (each part names its own commit)
    res = json.loads(prev.read_text()) if skip and prev.exists() else {}
    res.update({"commit": commit, "date": time.strftime("%Y-%m-%d")})
    with tempfile.TemporaryDirectory() as tmp:
        clone, work = Path(tmp) / "jaxgen", Path(tmp) / "work"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        work.mkdir()
        for name, fn in (
            ("bad_inputs", lambda: check_bad_inputs(clone, work)),
            ("ctrl_c", lambda: check_ctrl_c(clone, work)),
            ("quickstart", lambda: check_quickstart(clone, work)),
            ("tests", lambda: check_tests(clone)),
        ):
            if name in skip:
                continue
            print(f"== {name}", flush=True)
            res[name] = {**fn(), "commit": commit, "date": res["date"]}
            print(
                json.dumps({k: v for k, v in res[name].items() if k != "sample"}, indent=1)[:3000],
                flush=True,
            )
        shutil.rmtree(work, ignore_errors=True)
    res["ok"] = all(
        res[k]["ok"] for k in ("quickstart", "tests", "ctrl_c", "bad_inputs") if k in res
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "first_hour.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "first_hour.md").write_text(_markdown(res) + "\n")
    print(
        f"wrote {out / 'first_hour.md'}: {'all checks passed' if res['ok'] else 'a check FAILED'}"
    )
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
