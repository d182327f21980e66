"""What a run needs to know about the SLURM job it runs in: is it one, was it requeued, and why it is being
stopped (its time limit or a preemption). Outside SLURM every function answers "no job".

And what the submitting process checks before a sweep goes to SLURM (:func:`slurm_problem`): the client
commands, the configuration, the controller, each failure one line that says what is missing and how to fix it."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable, Mapping

# Slurm signals a job on a coarse clock (up to a minute early or late), so a signal this close to the time
# limit (plus the signal's own lead time) counts as the limit
SIGNAL_SLACK_S = 90.0


def job_id() -> str | None:
    """This process's SLURM job id (``SLURM_ARRAY_JOB_ID_TASK`` for an array task), or None outside SLURM."""
    jid = os.environ.get("SLURM_JOB_ID")
    if jid is None:
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else jid


def restart_count() -> int:
    """How many times SLURM has requeued this job (0: its first start, or not a SLURM job)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def parse_duration(text: str) -> float | None:
    """Seconds in one of squeue's durations ``[D-]HH:MM:SS``, ``MM:SS``, ``M:SS``; None for UNLIMITED etc."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def job_times(jid: str | None = None) -> tuple[float, float] | None:
    """(time limit, time used) of the job in seconds, from ``squeue``; None when it cannot tell."""
    jid = jid or os.environ.get("SLURM_JOB_ID")
    if not jid:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", jid, "-o", "%l|%M"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.stdout.strip().splitlines()[0].split("|") if out.stdout.strip() else []
    if len(parts) != 2:
        return None
    limit, used = parse_duration(parts[0]), parse_duration(parts[1])
    return (limit, used) if limit is not None and used is not None else None


def interruption_kind(signum: int, times: tuple[float, float] | None, lead_s: float) -> str:
    """``time_limit`` or ``preemption`` for a stop signal.

    SIGUSR2 is what submitit asks SLURM to send ``lead_s`` (``signal_delay_s``) before the time limit;
    SLURM also sends it at a preemption where the cluster sets ``preempt_send_user_signal``, and SIGTERM
    otherwise (or on ``scancel``). So: SIGUSR2 within ``lead_s`` + slack of the limit is the time limit
    (also when the times are unknown); anything else is a preemption.
    """
    if signum != signal.SIGUSR2:
        return "preemption"
    if times is None:
        return "time_limit"
    limit, used = times
    return "time_limit" if limit - used <= lead_s + SIGNAL_SLACK_S else "preemption"


def submission_warnings(benchmarks: list[str], tasks: Mapping[str, Any]) -> list[str]:
    """One line per benchmark of a sweep bound for SLURM that cannot checkpoint (a requeue restarts it);
    ``tasks``: the task registry (mibench.benchmarks.TASKS: passed in, this module sits below the benchmarks)."""
    resumable = sorted(n for n, t in tasks.items() if t.caps.resumable)
    return [f"benchmark={b} cannot checkpoint: a job SLURM stops at its time limit or preempts starts again from "
            f"step 0 (give it a hydra.launcher.timeout_min above its run time; resumable: {', '.join(resumable)})"
            for b in dict.fromkeys(benchmarks) if b in tasks and not tasks[b].caps.resumable]


def signal_lead_s(default: float = 120.0) -> float:
    """How long before its time limit the job is signalled: the submitit launcher's ``signal_delay_s``
    when this process is a Hydra job launched by it, else ``default`` (submitit's own default is 90)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        delay = HydraConfig.get().launcher.get("signal_delay_s") if HydraConfig.initialized() else None
    except Exception:  # noqa: BLE001 -- no Hydra, or a launcher without the key
        delay = None
    return float(delay) if delay is not None else default


SLURM_COMMANDS = ("sbatch", "srun", "squeue", "scontrol")  # submit, run the job step, watch the jobs, ping
PING_TIMEOUT_S = 20.0
NO_SLURM_FIX = "or train without SLURM: hardware=cpu / gpu, hydra/launcher=vectorized"


def slurm_problem(which: Callable[[str], str | None] = shutil.which, env: Mapping[str, str] | None = None,
                  timeout_s: float = PING_TIMEOUT_S) -> str | None:
    """Why a sweep cannot be submitted to SLURM from this machine, as one line naming what is missing and the
    fix; None when the client commands are on PATH and ``scontrol ping`` finds the controller up.

    In order: a missing command (``sbatch``, ``srun``, ``squeue``, ``scontrol``); ``SLURM_CONF`` naming no file
    (scontrol would retry it for a minute); no configuration at all (no slurm.conf, no configless controller
    found through DNS); the controller down or not answering."""
    env = os.environ if env is None else env
    missing = [c for c in SLURM_COMMANDS if which(c) is None]
    if missing:
        return (f"SLURM: {', '.join(missing)} not found on PATH (hardware=slurm_* and hydra/launcher=vectorized_slurm "
                f"submit with sbatch and watch with squeue): run on the cluster's login node, or load SLURM's "
                f"client (module load slurm), {NO_SLURM_FIX}")
    conf = env.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return f"SLURM_CONF={conf}: no such file (set it to the cluster's slurm.conf, or unset it to use the default)"
    try:
        p = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s,
                           env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        return (f"SLURM: the controller did not answer `scontrol ping` in {timeout_s:.0f} s (check SLURM_CONF and the "
                f"network to slurmctld, or ask the cluster's admins), {NO_SLURM_FIX}")
    except OSError as e:
        return f"SLURM: cannot run scontrol: {e.strerror or e}"
    if p.returncode == 0:
        return None
    lines = [ln.strip() for ln in (p.stdout + "\n" + p.stderr).splitlines() if ln.strip() and "***" not in ln]
    text = " ".join(lines).lower()
    if "configuration" in text and ("could not establish" in text or "unable to process" in text):
        return (f"SLURM: no configuration found (SLURM_CONF {'=' + conf if conf else 'unset'}, no slurm.conf in "
                f"/etc/slurm, no configless controller in DNS): set SLURM_CONF=/path/to/slurm.conf or run on the "
                f"cluster's login node, {NO_SLURM_FIX}")
    down = next((ln for ln in lines if " DOWN" in ln), None)
    if down is not None:
        return (f"SLURM: the controller is not reachable (scontrol ping: {down}): start slurmctld or ask the "
                f"cluster's admins, then submit again; {NO_SLURM_FIX}")
    return f"SLURM: `scontrol ping` failed (exit {p.returncode}: {lines[0] if lines else 'no output'}), {NO_SLURM_FIX}"
