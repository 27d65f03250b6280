"""config.resolve: how train's options, a model's defaults and a resumed run's settings combine."""

from __future__ import annotations

from pathlib import Path

import pytest

from freyvae_cli.config import LITERATURE_SEED, MODEL_DEFAULTS, TrainConfig, resolve
from freyvae_cli.errors import UsageError


def options(**given) -> dict:
    """train's options as the CLI passes them: its defaults, then `given`."""
    base = {**TrainConfig().to_dict(), "data": None, "out": None, "resume": None, "tensorboard": False,
            "tensorboard_dir": None, "force": False, "json_out": False, "quiet": False}
    return {**base, **given}


def never(path: Path) -> dict:
    raise AssertionError(f"a new run opened {path}")


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("FREYVAE_DATA", raising=False)


def test_a_new_run_takes_the_seed_defaults():
    cfg, resumed = resolve(options(), set(), never)
    assert resumed is None
    assert cfg == TrainConfig(data="data/frey_rawface.mat", out="runs", tensorboard="")


def test_given_options_and_the_data_variable(monkeypatch):
    monkeypatch.setenv("FREYVAE_DATA", "/somewhere/faces.mat")
    cfg, _ = resolve(options(latent_dim=3, out=Path("runs/x"), beta=0.5), {"latent_dim", "out", "beta"}, never)
    assert (cfg.latent_dim, cfg.out, cfg.beta, cfg.data) == (3, "runs/x", 0.5, "/somewhere/faces.mat")
    cfg, _ = resolve(options(data=Path("mine.mat")), {"data"}, never)
    assert cfg.data == "mine.mat"


def test_pixelvae_takes_its_own_defaults_unless_given():
    cfg, _ = resolve(options(model="pixelvae"), {"model"}, never)
    for name, value in MODEL_DEFAULTS["pixelvae"].items():
        assert getattr(cfg, name) == value, name
    cfg, _ = resolve(options(model="pixelvae", latent_dim=32, epochs=5), {"model", "latent_dim", "epochs"}, never)
    assert (cfg.latent_dim, cfg.epochs, cfg.batch_size) == (32, 5, 64)


def test_the_literature_split_has_its_own_seed_unless_given():
    cfg, _ = resolve(options(split="literature"), {"split"}, never)
    assert cfg.split_seed == LITERATURE_SEED
    cfg, _ = resolve(options(split="literature", split_seed=231), {"split", "split_seed"}, never)
    assert cfg.split_seed == 231


@pytest.mark.parametrize("given, explicit, message", [
    ({"lr": 0.0}, {"lr"}, "--lr must be above 0"),
    ({"test_fraction": 1.0}, {"test_fraction"}, "--test-fraction must be between 0 and 1"),
    ({"model": "pixelvae", "likelihood": "logistic"}, {"model", "likelihood"}, "categorical or mixture, not logistic"),
    ({"patience": 5}, {"patience"}, "--patience needs a validation split"),
])
def test_options_that_cannot_work(given, explicit, message):
    with pytest.raises(UsageError, match=message):
        resolve(options(**given), explicit, never)


def test_options_are_checked_before_a_resumed_run_is_opened():
    with pytest.raises(UsageError, match="--lr"):
        resolve(options(lr=-1.0, resume=Path("runs/interrupted.pth")), {"lr", "resume"}, never)


def saved_run(epoch: int = 4, **config) -> dict:
    cfg = TrainConfig(data="faces.mat", out="old", latent_dim=7, epochs=10, tensorboard="old/tb", **config)
    return {"config": cfg.to_dict(), "epoch": epoch}


def test_a_resumed_run_keeps_its_settings_but_those_given():
    opened = []

    def load(path: Path) -> dict:
        opened.append(path)
        return saved_run()

    resume = Path("runs/a/interrupted.pth")
    cfg, resumed = resolve(options(resume=resume, lr=5e-3, latent_dim=20), {"resume", "lr"}, load)
    assert opened == [resume] and resumed == saved_run()
    assert (cfg.latent_dim, cfg.lr, cfg.data, cfg.epochs) == (7, 5e-3, "faces.mat", 10)
    assert cfg.out == "runs/a"  # next to the checkpoint, unless --out
    assert cfg.tensorboard == "old/tb"  # kept, unless --tensorboard
    cfg, _ = resolve(options(resume=resume, out=Path("new"), tensorboard=True, epochs=12),
                     {"resume", "out", "tensorboard", "epochs"}, load)
    assert (cfg.out, cfg.tensorboard, cfg.epochs) == ("new", "new/tensorboard", 12)


def test_a_resumed_run_trains_at_least_to_its_own_epochs():
    cfg, _ = resolve(options(resume=Path("c.pth")), {"resume"}, lambda p: saved_run(epoch=15))
    assert cfg.epochs == 15
    cfg, _ = resolve(options(resume=Path("c.pth"), epochs=3), {"resume", "epochs"}, lambda p: saved_run(epoch=15))
    assert cfg.epochs == 3  # train.runs.check_resume then says it is done already


def test_a_new_run_with_tensorboard_writes_under_its_folder():
    cfg, _ = resolve(options(tensorboard=True, out=Path("r")), {"tensorboard", "out"}, never)
    assert cfg.tensorboard == "r/tensorboard"
    cfg, _ = resolve(options(tensorboard_dir=Path("tb")), {"tensorboard_dir"}, never)
    assert cfg.tensorboard == "tb"
