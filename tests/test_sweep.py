"""`freyvae sweep` on Optuna: parameters checked as train checks them, workers as separate processes
on the embedded journal file and on a real PostgreSQL server (FREYVAE_TEST_POSTGRES, which .ci/run
starts), lost workers replaced, Ctrl-C, pruning, --show and compare on a study's folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from freyvae_cli import checkpoint as ck
from tests.conftest import last_json, main_in_process, make_faces, run_freyvae, write_mat

optuna = pytest.importorskip("optuna")
POSTGRES = os.environ.get("FREYVAE_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(
    not POSTGRES and not os.environ.get("CI"), reason="set FREYVAE_TEST_POSTGRES to a PostgreSQL URL (.ci/run does)")
TINY = ["-p", "epochs=8", "-p", "latent-dim=2", "-p", "batch-size=16", "-p", "beta=0.25:4:log"]


@pytest.fixture(scope="module")
def faces_mat(tmp_path_factory) -> Path:
    return write_mat(tmp_path_factory.mktemp("sweep") / "faces.mat", make_faces(120))


def one_line(r, code: int) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    return lines[0]


def worker(study: str, out: Path, data: Path, n: int, *extra: str, storage: str | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "freyvae_cli", "sweep", study, "--trials", str(n), "--out", str(out),
            "-p", f"data={data}", *TINY, *extra, "--json"]
    if storage:
        args += ["--storage", storage, "--heartbeat", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def load(study: str, out: Path, storage: str | None):
    from freyvae_cli import sweep as sw

    store, _ = sw.open_storage(storage, out / study, 1)
    return optuna.load_study(study_name=study, storage=store)


def check_study(study: str, out: Path, n: int, storage: str | None = None):
    """Exactly n finished trials, no setting twice, and each finished trial's folder loads."""
    s = load(study, out, storage)
    finished = [t for t in s.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n, [t.state.name for t in s.trials]
    betas = [t.params["beta"] for t in s.trials if t.params]
    assert len(set(betas)) == len(betas)
    for t in finished:
        ck.load_model(Path(t.user_attrs["run"]) / "vae_final_model.pth")
    best = ck.load_model(Path(s.best_trial.user_attrs["run"]) / "vae_best_model.pth")[1]
    assert best["config"]["split"] == "literature" and best["config"]["beta"] == s.best_trial.params["beta"]
    return s


# --- parameters ----------------------------------------------------------------------------------

BAD = [
    (["-p", "frobnicate=3"], "train has no option --frobnicate"),
    (["-p", "latent-dim=0"], "latent-dim=0"),
    (["-p", "dropout=0.2:5"], "dropout=5"),
    (["-p", "likelihood=gaussian,bernoulli"], "gaussian"),
    (["-p", "beta"], "NAME=VALUE"),
    (["-p", "beta=4:1"], "LO < HI"),
    (["-p", "beta=0:4:log"], "LO > 0"),
    (["-p", "out=/tmp/x"], "not a setting to search"),
    (["-p", "split=random"], "validation faces"),
    (["-p", "data=a.mat,b.mat"], "one data for the whole study"),
    ([], "give --trials N"),
]


@pytest.mark.parametrize("args,words", BAD, ids=[" ".join(a) or "no --trials" for a, _ in BAD])
def test_a_bad_param_is_one_line_and_exit_2_before_any_trial(args, words, tmp_path, capsys):
    trials = ["--trials", "2"] if args else []
    r = main_in_process(["sweep", "s", *trials, "--out", str(tmp_path), *args], capsys)
    assert words in one_line(r, 2) and not (tmp_path / "s").exists()


def test_params_become_fixed_values_choices_and_ranges():
    from freyvae_cli import sweep as sw
    from freyvae_cli.cli.sweep import _train_options

    convert, defaults = _train_options()
    assert defaults["latent_dim"] == 20 and defaults["model"] == "seed" and defaults["beta"] == 1.0
    parse = lambda t: sw.parse_param(t, convert)  # noqa: E731
    assert parse("model=pixelvae") == sw.Param("model", "fixed", ("pixelvae",))
    assert parse("latent-dim=2,8,20") == sw.Param("latent_dim", "choice", (2, 8, 20))
    assert parse("latent-dim=2:20") == sw.Param("latent_dim", "int", low=2, high=20)
    assert parse("beta=0.25:4:log") == sw.Param("beta", "float", low=0.25, high=4.0, log=True)
    assert parse("lr=1:2").kind == "float" and parse("lr=1.0:2.0").kind == "float"
    from freyvae_cli.cli.sweep import _warmup

    # the pruner's warm-up covers the longest KL warm-up a trial can get, in any order, and 5 epochs
    assert _warmup([parse("kl-warmup=10,2")], defaults) == 10 and _warmup([], defaults) == 5
    assert _warmup([parse("model=seed,pixelvae")], defaults) == 10  # pixelvae's own KL warm-up


def test_an_unreachable_database_is_one_line(tmp_path, faces_mat, capsys):
    r = main_in_process(["sweep", "s", "--trials", "2", "--out", str(tmp_path), "-p", f"data={faces_mat}",
                         "--storage", "postgresql://nobody:secret@127.0.0.1:1/none"], capsys)
    line = one_line(r, 1)
    assert "cannot reach the study's storage" in line and "secret" not in line


def test_without_optuna_the_command_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['optuna'] = None\n"
            "from freyvae_cli.cli import main; main(['sweep', 's', '--trials', '1'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert 'pip install "freyvae[sweep]"' in one_line(r, 1)


# --- workers on the journal file -----------------------------------------------------------------

def test_two_workers_on_the_journal_file_finish_exactly_n_trials(tmp_path, faces_mat, runner):
    procs = [worker("beta", tmp_path, faces_mat, 4) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert last_json(out)["best"]["run"].startswith(str(tmp_path / "beta" / "trial-"))
    s = check_study("beta", tmp_path, 4)
    assert {t.user_attrs["worker"] for t in s.trials} and (tmp_path / "beta" / "journal.log").is_file()
    shown = run_freyvae("sweep", "beta", "--show", "--out", str(tmp_path), "--json", "--plot",
                        str(tmp_path / "study.png"))
    payload = last_json(shown.stdout)
    assert [t["number"] for t in payload["trials"]][0] == s.best_trial.number
    assert set(payload["trials"][0]) >= {"number", "state", "value", "params", "run"}
    assert payload["best"]["value"] == pytest.approx(s.best_value) and (tmp_path / "study.png").stat().st_size > 10_000
    compared = run_freyvae("compare", str(tmp_path / "beta"), "--json")
    assert compared.returncode == 0, compared.stderr
    assert len(json.loads(compared.stdout)) == 4


def wait_for_a_running_trial(study: str, out: Path, storage: str | None, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            s = load(study, out, storage)
            if any(t.state.name == "RUNNING" and (out / study / f"trial-{t.number:04d}" / "history.json").exists()
                   for t in s.trials):
                return
        except (KeyError, FileNotFoundError):
            pass
        time.sleep(0.2)
    raise AssertionError("no trial started")


def killed_worker_is_replaced(study: str, out: Path, data: Path, storage: str | None) -> None:
    first = worker(study, out, data, 3, storage=storage)
    wait_for_a_running_trial(study, out, storage, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    second = worker(study, out, data, 3, storage=storage)
    out_text, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    s = load(study, out, storage)
    states = [t.state.name for t in s.trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 3, states
    assert (out / study / "trial-0000" / "history.json").exists()  # the lost trial's folder stays


def test_a_worker_killed_on_the_journal_file_leaves_a_trial_that_the_next_worker_fails(tmp_path, faces_mat):
    """No heartbeat on a journal file: a worker's trial records its host and process, and a worker
    on the same machine that finds the process gone marks it failed and runs one in its place."""
    killed_worker_is_replaced("lost", tmp_path, faces_mat, None)


def test_ctrl_c_fails_the_trial_keeps_its_checkpoint_and_exits_130(tmp_path, faces_mat):
    proc = worker("stop", tmp_path, faces_mat, 2)
    wait_for_a_running_trial("stop", tmp_path, None, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "marked failed" in err
    assert [t.state.name for t in load("stop", tmp_path, None).trials] == ["FAIL"]
    assert (tmp_path / "stop" / "trial-0000" / "interrupted.pth").is_file()


def test_a_pruned_trial_stops_training_after_the_warm_up(tmp_path, faces_mat):
    """A real pruner that prunes everything above 0 nats: each trial stops at the first epoch the
    pruner may act on, with its models saved, and counts as finished."""
    from freyvae_cli import sweep as sw
    from freyvae_cli.cli.sweep import _faces, _train_options
    from freyvae_cli.ui import SweepProgress

    convert, defaults = _train_options()
    params = [sw.parse_param(p, convert) for p in ("epochs=6", "latent-dim=2", "beta=0.5:2", f"data={faces_mat}")]
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0, n_warmup_steps=2))
    faces, source, digest = _faces(faces_mat)
    sw.Worker(study, 2, params, tmp_path / "p", defaults, faces, source, digest, False, SweepProgress(2)).run()
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    for t in study.trials:
        history = json.loads((Path(t.user_attrs["run"]) / "history.json").read_text())
        assert [r["epoch"] for r in history] == [1, 2]  # stopped at the first epoch the pruner may act on
        assert (Path(t.user_attrs["run"]) / "vae_best_model.pth").is_file()


# --- workers on PostgreSQL -----------------------------------------------------------------------

@needs_postgres
def test_two_workers_on_postgresql_finish_exactly_n_trials(tmp_path, faces_mat):
    assert POSTGRES, "CI must run the PostgreSQL tests: .ci/run sets FREYVAE_TEST_POSTGRES"
    study = f"pg-{uuid.uuid4().hex[:8]}"
    procs = [worker(study, tmp_path, faces_mat, 4, storage=POSTGRES) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    check_study(study, tmp_path, 4, POSTGRES)
    assert not (tmp_path / study / "journal.log").exists()


@needs_postgres
def test_a_worker_killed_on_postgresql_has_its_trial_failed_by_the_heartbeat(tmp_path, faces_mat):
    assert POSTGRES, "CI must run the PostgreSQL tests: .ci/run sets FREYVAE_TEST_POSTGRES"
    killed_worker_is_replaced(f"pg-{uuid.uuid4().hex[:8]}", tmp_path, faces_mat, POSTGRES)
