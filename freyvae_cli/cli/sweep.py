"""`freyvae sweep`: many training runs on Optuna (freyvae_cli/sweep.py does the work)."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from freyvae_cli import ui
from freyvae_cli.cli.common import JsonOpt, QuietOpt, command, done
from freyvae_cli.errors import FreyError, UsageError


class Prune(str, Enum):
    median = "median"


ParamOpt = Annotated[Optional[list[str]], typer.Option(
    "--param", "-p", show_default=False,
    help="A train option by its name: NAME=VALUE (fixed), NAME=a,b,c (a choice), NAME=LO:HI (uniform; integers "
         "where both ends are), NAME=LO:HI:log (log-uniform). E.g. -p model=pixelvae -p beta=0.25:4:log.")]
StorageOpt = Annotated[Optional[str], typer.Option(
    show_default=False, help="postgresql://USER:PASSWORD@HOST/DB (or mysql://...): one study for many machines. "
    "[default: a journal file in OUT/STUDY, for the processes of one machine]")]


@command
def sweep(
    study: Annotated[str, typer.Argument(help="The study's name; its trials are run folders OUT/STUDY/trial-NNNN.")],
    trials: Annotated[Optional[int], typer.Option(
        "--trials", "-n", min=1, show_default=False,
        help="Run the study until it has N finished trials, whatever the workers.")] = None,
    param: ParamOpt = None,
    storage: StorageOpt = None,
    prune: Annotated[Optional[Prune], typer.Option(
        help="median: stop a trial whose validation loss is above the median of earlier trials at the same "
             "epoch (never in the KL warm-up, nor in the first 5 epochs).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of studies.")] = Path("runs"),
    heartbeat: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="With --storage: seconds between a worker's heartbeats; a trial 3 beats "
        "late is failed and run again by another worker. [default: 10]")] = None,
    show: Annotated[bool, typer.Option("--show", help="List the study's trials, best first, instead.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        help="With --show: draw the objective by trial, the parameters' importances and reconstruction "
             "against KL.", show_default=False)] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Search train's settings with Optuna: every worker runs this same command on one study."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", study):
        raise UsageError(f"study name {study!r}: use letters, digits, '_', '-' and '.' (it names a folder)")
    try:
        import optuna
    except ImportError:
        raise FreyError('freyvae sweep needs Optuna: pip install "freyvae[sweep]"') from None
    from freyvae_cli import sweep as sw  # not at import: `freyvae --help` stays quick

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no traceback per failed trial: the progress says it
    heartbeat = heartbeat or sw.HEARTBEAT
    folder = out / study
    if show:
        return _show(study, folder, storage, plot, json_out)
    if plot is not None:
        raise UsageError("--plot draws a study's trials: add --show")
    if trials is None:
        raise UsageError("give --trials N: the number of finished trials to run the study to")
    payload = _search(study, folder, trials, param or [], storage, prune and prune.value, heartbeat)
    best = payload["best"]
    message = f"study {study}: {payload['complete']} complete, {payload['pruned']} pruned, {payload['failed']} failed"
    if best:
        settings = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        message += (f"; best trial {best['number']}: validation -ELBO {best['value']:.2f} nats per image "
                    f"(test {best['test_loss']:.2f}) with {settings or 'the fixed settings'}, in {best['run']}")
    done(json_out, payload, message)


def _search(study: str, folder: Path, trials: int, param: list[str], storage: str | None, prune: str | None,
            heartbeat: int) -> dict:
    """Check the settings, open the study, and work on it until it has `trials` finished trials."""
    from freyvae_cli import sweep as sw

    convert, defaults = _train_options()
    params = [sw.parse_param(p, convert) for p in param]
    twice = sorted({p.name for p in params if [q.name for q in params].count(p.name) > 1})
    if twice:
        raise UsageError(f"--param {twice[0].replace('_', '-')} is given twice; give each setting once")
    fixed = {p.name: p.values[0] for p in params if p.kind == "fixed"}
    if fixed.get("split", "literature") != "literature":
        raise UsageError("a sweep chooses on validation faces, which --split random has none of: "
                         "leave split out (the sweep uses --split literature, 1565/200/200)")
    faces, source, data_hash = _faces(Path(fixed.get("data") or defaults["data"] or _default_data()))
    store, where = sw.open_storage(storage, folder, heartbeat)
    the_study = sw.open_study(study, store, params, prune, _warmup(params, defaults))
    progress = ui.SweepProgress(trials)
    worker = sw.Worker(the_study, trials, params, folder, defaults, faces, source, data_hash, storage is not None,
                       progress)
    try:
        worker.run()
    except sw.Interrupted as e:
        progress.close()
        ui.error(f"{e}; the trial is marked failed")
        raise typer.Exit(128 + e.signum) from None
    finally:
        progress.close()
    return _summary(the_study, where, trials)


def _train_options():
    """A converter that checks a value as train's option of that name does, and every train
    option's default: the sweep's settings are train's, one source of truth."""
    from typer.main import get_command

    from freyvae_cli.cli.common import app

    cmd = get_command(app).commands["train"]
    options = {p.name: p for p in cmd.params if p.name}
    ctx = cmd.make_context("train", [], resilient_parsing=True)

    def plain(v):
        return v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v

    def convert(name: str, text: str):
        option = options.get(name)
        if option is None or getattr(option, "is_flag", False):
            raise UsageError(f"--param {name}: train has no option --{name.replace('_', '-')} to search; "
                             "see freyvae train --help")
        try:
            return plain(option.type.convert(text, option, ctx))
        except Exception as e:  # click's BadParameter: the option's own words
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            raise UsageError(f"--param {name.replace('_', '-')}={text}: {message}") from None

    return convert, {name: plain(o.default) if o.default is not None else None for name, o in options.items()}


def _default_data() -> Path:
    from freyvae_cli.config import default_data_path

    return default_data_path()


def _faces(path: Path):
    from freyvae_cli.data import sources

    faces, source = sources.load_data(path)
    return faces, source, sources.pixel_hash(faces)


MIN_WARMUP = 5  # epochs: earlier, the median of a few noisy epochs pruned trials near the best (docs/sweeps.md)


def _warmup(params, defaults: dict) -> int:
    """The pruner's warm-up: the longest KL warm-up any trial can have (a model's default included),
    and never under MIN_WARMUP epochs."""
    from freyvae_cli.config import MODEL_DEFAULTS

    given = {p.name: p for p in params}
    if "kl_warmup" in given:
        return max(MIN_WARMUP, int(given["kl_warmup"].largest()))
    models = given["model"].values if "model" in given else (defaults["model"],)
    return max(MIN_WARMUP, *(MODEL_DEFAULTS.get(m, {}).get("kl_warmup", defaults["kl_warmup"]) for m in models))


def _summary(study, where: str, trials: int) -> dict:
    from freyvae_cli import sweep as sw

    c = sw.counts(study)
    rows = [r for r in sw.trial_rows(study) if r["state"] == "complete"]
    return {"study": study.study_name, "storage": where, "trials": trials, **c, "units": "nats per image",
            "best": rows[0] if rows else None}


def _show(name: str, folder: Path, storage: str | None, plot: Path | None, json_out: bool) -> None:
    import optuna

    from freyvae_cli import figures
    from freyvae_cli import sweep as sw

    if plot is not None:
        figures.check_out(plot, "plot")
    if storage is None and not (folder / "journal.log").is_file():
        raise FreyError(f"no study {name} in {folder} (no journal.log); pass --out, or --storage for a database")
    store, where = sw.open_storage(storage, folder, sw.HEARTBEAT)
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        raise FreyError(f"no study {name} in {where}") from None
    rows = sw.trial_rows(study)
    ui.sweep_table(name, rows)
    payload = {"study": name, "storage": where, "trials": rows, "units": "nats per image",
               "best": next((r for r in rows if r["state"] == "complete"), None)}
    if plot is not None:
        figures.save_sweep_plot(rows, sw.importances(study), plot)
        ui.info(f"wrote {plot}")
    if json_out:
        ui.emit_json(payload)
