"""Command line: ``python -m mibench [-m] [group=choice ...] [key=value ...]`` (also the ``mibench`` script).

Before Hydra starts any job, every override (every combination of a sweep) is composed and
validated, so bad input exits with status 2 and one line naming the bad value and what would be
valid, and no training has started.

Start-up time is mostly imports, so each command imports what it uses when it uses it: ``--help``
needs only omegaconf; the preflight, Hydra and (for a config that composes) the validators; a run,
the training stack.
"""
from __future__ import annotations

import itertools
import sys

from .overrides import CONF_DIR, benchmark_default, implied  # noqa: F401  (light: omegaconf only)
MAX_PREFLIGHT = 256
HELP_FLAGS = ("--help", "-h")


def groups() -> dict[str, list[str]]:
    """Config groups of conf/ (except hydra) and their choices, plug-ins' conf folders included."""
    from .plugins import conf_dirs

    out: dict[str, set[str]] = {}
    for root in (CONF_DIR, *conf_dirs()):
        for d in (p for p in root.iterdir() if p.is_dir() and p.name != "hydra"):
            out.setdefault(d.name, set()).update(f.stem for f in d.glob("*.yaml"))
    return {g: sorted(c) for g, c in sorted(out.items())}


def help_text() -> str | None:
    """The page Hydra's ``--help`` prints, rendered from conf/hydra/default.yaml without Hydra.

    Fills ``$APP_CONFIG_GROUPS`` as Hydra does; None if the template needs more than that
    (``$CONFIG``, ``$FLAGS_HELP``, a key of Hydra's own help config): then Hydra renders it.
    """
    import string

    from omegaconf import OmegaConf

    node = OmegaConf.create({"hydra": OmegaConf.load(CONF_DIR / "hydra" / "default.yaml")})
    listing = "".join(f"{group}: {', '.join(choices)}\n" for group, choices in groups().items())
    try:
        return string.Template(node.hydra.help.template).substitute(APP_CONFIG_GROUPS=listing)
    except Exception:  # KeyError for another $NAME, omegaconf's errors for a missing ${hydra.help.x}
        return None


def wants_help(args: list[str]) -> bool:
    """Only a help flag (and maybe -m): overrides or other flags could change the page, so Hydra renders those."""
    rest = set(args) - {"-m", "--multirun"}
    return bool(rest) and rest <= set(HELP_FLAGS)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def sweep_preset(args: list[str]) -> str | None:
    """The ``experiment=X`` among ``args`` whose YAML sets ``hydra.sweeper.params`` (needs -m), if any."""
    from omegaconf import OmegaConf

    for a in args:
        if a.startswith("experiment=") and "," not in a:
            path = CONF_DIR / "experiment" / f"{a.split('=', 1)[1]}.yaml"
            if path.exists() and OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") is not None:
                return a.split("=", 1)[1]
    return None


def preflight(args: list[str], notes: list[str] | None = None) -> str | None:
    """Return an error line for the first bad override / config, or None when all is well.

    The first job's config is composed with its Hydra node and the command line's hydra overrides: the
    launcher's settings are checked there (``-m``), and ``notes`` (when a list is given) gets one line per
    preset the command line overrides implicitly (:func:`mibench.compose.preset_notes`, a preset's sweep)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = "-m" in args or "--multirun" in args
    raw = [a for a in args if not a.startswith("-")]
    preset = sweep_preset(raw)
    if preset and not multirun:
        return f"experiment={preset} is a sweep preset: add -m to run its jobs (python -m mibench -m experiment={preset})"
    try:
        overrides = OverridesParser.create().parse_overrides(raw)
    except Exception as e:  # hydra's OverrideParseException and friends
        return f"cannot parse overrides: {_first_line(e)}"
    if err := _runs_root_error(overrides):
        return err
    known = groups()
    hydra_overrides: list[str] = []  # the launcher's settings, hydra/launcher=...: composed with the first job
    per_override = _values(overrides, known, multirun, hydra_overrides)
    if isinstance(per_override, str):
        return per_override
    if preset:  # the preset's own sweep, except keys the command line sets
        per_override += _preset_sweep(preset, overrides, notes)
    try:
        per_override = _one_seed(per_override)
    except ValueError as e:  # ConfigError
        return str(e)
    combos = list(itertools.islice(itertools.product(*per_override), MAX_PREFLIGHT))
    # jobs that run elsewhere (SLURM) check their GPU where they run, not on the submitting node
    remote = any(a.startswith(("hydra/launcher=submitit_slurm", "hydra/launcher=slurm", "hydra/launcher=vectorized_slurm",
                               "hardware=slurm")) for a in raw)
    given_groups = {ov.key_or_group: ov.get_value_element_as_str() for ov in overrides if ov.key_or_group in known
                    and not ov.is_sweep_override() and not ov.is_delete()}
    given_keys = {ov.key_or_group for ov in overrides}

    from .compose import parsed_once

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), parsed_once():
        for k, combo in enumerate(combos):
            first = None if k else _First(hydra_overrides, multirun, given_groups, given_keys, notes)
            if err := _check(combo, remote, first):
                return err
    GlobalHydra.instance().clear()
    return None


def _values(overrides: list, known: dict[str, list[str]], multirun: bool, hydra_overrides: list[str]) -> list[list[str]] | str:
    """Each command-line override's values as ``key=value`` strings (a sweep's one per value), or an error line
    (a sweep without -m, an unknown choice of a group). The launcher's settings go to ``hydra_overrides``."""
    out: list[list[str]] = []
    for ov in overrides:
        key = ov.key_or_group
        if key.startswith("hydra") and key != "hydra.searchpath":  # the search path changes what composes
            if not ov.is_sweep_override():
                hydra_overrides.append(ov.input_line)
            continue
        sweep = ov.is_sweep_override()
        if sweep and not multirun:
            return f"{ov.input_line} is a sweep: add -m to run one job per value (or write a list as key=[a,b])"
        values = list(ov.sweep_string_iterator()) if sweep else [ov.get_value_element_as_str()]
        group = key.split("@")[0]
        if group in known and not ov.is_delete():
            for v in values:
                if v not in known[group] and v != "null":
                    return f"unknown {group} {v!r} (valid: {', '.join(known[group])})"
        prefix = "~" if ov.is_delete() else ("+" if ov.is_add() else ("++" if ov.is_force_add() else ""))
        out.append([f"{prefix}{key}={v}" for v in values])
    return out


def _preset_sweep(preset: str, overrides: list, notes: list[str] | None) -> list[list[str]]:
    """A sweep preset's own sweep (``hydra.sweeper.params``) but the keys the command line sets; ``notes`` gets a
    line for each key the command line replaces."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    given = {ov.key_or_group: ov.input_line for ov in overrides}
    params = OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml").hydra.sweeper.params
    if notes is not None:
        notes.extend(f"{given[key]} replaces experiment={preset}'s sweep {key}={vals}" for key, vals in params.items()
                     if key in given)
    parsed = OverridesParser.create().parse_overrides([f"{key}={vals}" for key, vals in params.items() if key not in given])
    # range(0,10), choice(...), a,b,c: Hydra's own sweep syntax
    return [[f"{ov.key_or_group}={v}" for v in (list(ov.sweep_string_iterator()) if ov.is_sweep_override()
                                                 else [ov.get_value_element_as_str()])] for ov in parsed]


def _runs_root_error(overrides: list) -> str | None:
    """The runs root (``runs_root=``, else $MIBENCH_RUNS, else runs/) first: no other check matters when no run
    can write its records (each job's config checks it again, with its interpolations resolved)."""
    import os

    from .checks import ConfigError, check_runs_root

    given = [ov for ov in overrides if ov.key_or_group == "runs_root"]
    if given and (given[-1].is_sweep_override() or "${" in given[-1].get_value_element_as_str()):
        return None
    root = given[-1].get_value_element_as_str() if given else os.environ.get("MIBENCH_RUNS", "runs")
    try:
        check_runs_root(root) if root != "null" else None
    except ConfigError as e:
        return str(e)
    return None


class _First:
    """What the first job's check also does: compose with the hydra overrides, check the launcher, collect notes."""

    def __init__(self, hydra_overrides: list[str], multirun: bool, groups: dict[str, str], keys: set[str],
                 notes: list[str] | None):
        self.hydra_overrides, self.multirun, self.groups, self.keys, self.notes = (hydra_overrides, multirun, groups,
                                                                                   keys, notes)

    def check(self, cfg) -> None:
        """Raise ConfigError for a bad launcher setting or a SLURM launcher that cannot submit from here (or
        would not, without -m); add the preset notes; drop the hydra node."""
        from omegaconf import open_dict

        from .compose import preset_notes

        launcher = cfg.hydra.launcher
        if self.multirun and str(launcher.get("_target_", "")).endswith("VectorizedLauncher"):
            from hydra_plugins.mibench_launcher.vectorized_launcher import check_settings

            check_settings(launcher)
        if submits_to_slurm(launcher):
            self.check_slurm()
        if self.notes is not None:
            self.notes.extend(preset_notes(cfg, self.groups, self.keys))
        with open_dict(cfg):
            del cfg["hydra"]


    def check_slurm(self) -> None:
        """A SLURM launcher: without -m it would train here (an error, except inside a SLURM job: SLURM_JOB_ID);
        with -m, the cluster must answer (:func:`mibench.cluster.slurm_problem`)."""
        import os

        from .checks import ConfigError

        if not self.multirun:
            if os.environ.get("SLURM_JOB_ID") is None:
                chosen = (f"hardware={self.groups['hardware']}" if str(self.groups.get("hardware", "")).startswith("slurm")
                          else next((o for o in self.hydra_overrides if o.startswith("hydra/launcher=")), "a SLURM launcher"))
                raise ConfigError(f"{chosen} without -m would train here, on this node, not on SLURM: add -m to submit "
                                  f"it (python -m mibench -m {chosen} ...), or use hardware=cpu / gpu to train here")
            return
        from .cluster import slurm_problem

        if problem := slurm_problem():
            raise ConfigError(problem)


def submits_to_slurm(launcher) -> bool:
    """Whether a composed ``hydra.launcher`` sends jobs to SLURM: a submitit SLURM launcher (Hydra's or mibench's),
    or the vectorised one with ``submitit: slurm`` (``local`` and ``debug`` run here)."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("VectorizedLauncher"):
        return launcher.get("submitit") == "slurm"
    return target.endswith("SlurmLauncher")


def _check(overrides: tuple[str, ...], remote: bool, first: _First | None = None) -> str | None:
    """Compose one job's config (inside initialize_config_dir) and validate it; an error line or None.

    The validators build estimators and so import torch (seconds): only a config that composes pays for that.
    """
    from hydra import compose

    from .compose import composition_error

    extra = first.hydra_overrides if first is not None else []
    try:
        cfg = compose(config_name="config", overrides=[*extra, *overrides], return_hydra_config=first is not None)
    except Exception as e:  # composition errors: unknown keys, bad types
        return composition_error(e, [*extra, *overrides], lambda ovs: compose(
            config_name="config", overrides=ovs, return_hydra_config=True))
    from .config import ConfigError, validate

    try:
        if first is not None:
            first.check(cfg)
        validate(cfg, check_hardware=not remote)
    except ConfigError as e:
        return str(e)
    except Exception as e:
        return _first_line(e)
    return None


def _one_seed(per_override: list[list[str]]) -> list[list[str]]:
    """A sweep over seeds is validated with its first seed only, once every seed value has passed
    the seed's own check: the seed changes no other check, and composing each seed's job again cost
    ~0.25 s a job (a 10-seed preset validated 10 times over)."""
    from .checks import check_seed

    out = []
    for opts in per_override:
        if len(opts) > 1 and all(o.startswith("seed=") for o in opts):
            for o in opts:
                v = o.split("=", 1)[1]
                check_seed(int(v) if v.lstrip("-").isdigit() else v)
            opts = opts[:1]
        out.append(opts)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m mibench ARGS``: help, leaderboard, report, status, or preflight then Hydra (exit 2 on bad input).

    The program's entry point: it ends the process's use of cyclic GC (see ``_before_exit``), so
    code that goes on running in the same interpreter composes and runs configs with
    ``mibench.compose`` and ``mibench.app.run`` instead.
    """
    try:
        _dispatch(list(sys.argv[1:] if argv is None else argv))
    finally:
        _before_exit()


def _dispatch(args: list[str]) -> None:
    if args and args[0] == "help":
        args = ["--help"]
    if wants_help(args) and (text := help_text()) is not None:
        print(text)
        return
    if args and args[0] == "leaderboard":
        from .leaderboard import main as leaderboard

        leaderboard(args[1:])
        return
    if args and args[0] == "report":
        from .report import main as report

        report(args[1:])
        return
    if args and args[0] == "status":
        from .status import main as status

        status(args[1:])
        return
    from .plugins import searchpath_override

    args = implied(args) + searchpath_override(args)
    hydra_flags = [a for a in args if a.startswith("-") and a not in ("-m", "--multirun")]
    if not hydra_flags:  # --help, --cfg, --info ... go straight to Hydra
        notes: list[str] = []
        err = preflight(args, notes)
        if err:
            print(f"mibench: error: {err}", file=sys.stderr)
            raise SystemExit(2)
        for note in notes:
            print(f"mibench: note: {note}", file=sys.stderr)
    from .app import hydra_entry

    hydra_entry(args)


def _before_exit() -> None:
    """Collect garbage once, then freeze what is left so the interpreter's collections at exit skip it.

    Those collections walk every object torch and Lightning made: about 1 s of a one-step run on
    2 cores, against ~0.2 s for this collection. Collecting first still finalizes what is garbage by
    now; objects alive at exit were never promised finalization (see ``object.__del__``).
    """
    import gc

    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main()
