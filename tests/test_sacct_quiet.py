"""hydra_plugins/mibench_launcher/sacct_quiet.py: submitit's "Bypassing sacct error" warnings become one line."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# submitit's real watcher (SlurmInfoWatcher.update) polls sacct three times; sacct here is a script that
# fails as it does on a cluster without an accounting database. Logging is set up as under Hydra: submitit's
# own handlers (stderr and stdout, from importing submitit) plus a root handler on stdout.
SCRIPT = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(stream=sys.stdout, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    import hydra_plugins.mibench_launcher  # what Hydra's plug-in scan imports: installs the filter
    from submitit.slurm.slurm import SlurmInfoWatcher
    watcher = SlurmInfoWatcher(delay_s=0)
    watcher.register_job("12345")
    for _ in range(3):
        watcher.update()
    logging.getLogger("submitit").warning("another submitit warning")
    print("polls:", watcher.num_calls)
""")


def run_polls(tmp_path, sacct_stderr: str) -> str:
    """Stdout and stderr of SCRIPT with a failing fake sacct that writes ``sacct_stderr`` to stderr."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacct").write_text(f"#!/bin/sh\nprintf '{sacct_stderr}' >&2\nexit 1\n")
    (fake / "sacct").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "polls: 3" in out
    return out


def test_three_sacct_failures_log_one_line(tmp_path):
    out = run_polls(tmp_path, "")
    lines = [ln for ln in out.splitlines() if "sacct" in ln.lower()]
    assert len(lines) == 1, out
    assert "SLURM accounting (sacct) unavailable" in lines[0] and "further sacct warnings suppressed" in lines[0]
    assert "Bypassing" not in out
    assert out.count("another submitit warning") >= 1  # other submitit messages pass unchanged


def test_sacct_own_error_printed_once(tmp_path):
    """Real sacct also writes to stderr each poll (no accounting: "Slurm accounting storage is disabled"):
    after the first failure, later calls send it to /dev/null."""
    out = run_polls(tmp_path, "Slurm accounting storage is disabled\\n")
    assert out.count("Slurm accounting storage is disabled") == 1, out
    assert out.count("SLURM accounting (sacct) unavailable") == 1, out


def test_filter_logs_real_text_once_and_installs_once():
    from hydra_plugins.mibench_launcher.sacct_quiet import MESSAGE, SacctQuiet, install

    logger = logging.getLogger("submitit.test_sacct_quiet")
    logger.propagate = False
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    import submitit.core.core as core  # (loaded where the warnings come from) the filter quiets its sacct calls:

    saved = core.subprocess  # put them back after
    notice = logging.getLogger("mibench.slurm")
    handler = Collect()
    logger.addHandler(handler)
    notice.addHandler(handler)
    try:
        f = install(logger)
        assert install(logger) is f and sum(isinstance(x, SacctQuiet) for x in logger.filters) == 1
        text = ("Call #%d - Bypassing sacct error Command '['sacct', '-o', 'JobID,State,NodeList', '--parsable2', "
                "'-j', '12345']' returned non-zero exit status 1., status may be inaccurate.")
        for n in (1, 2, 3):
            logger.warning(text % n)
        logger.warning("Bypassing state error:\nsomething else")
        assert seen == [MESSAGE, "Bypassing state error:\nsomething else"]
    finally:
        logger.removeHandler(handler)
        notice.removeHandler(handler)
        logger.filters.clear()
        if core is not None:
            core.subprocess = saved
