"""`train --tensorboard`: the per-epoch figures, KL per dimension, a reconstruction grid every
--checkpoint-every epochs and the run's settings as hparams, written with torch.utils.tensorboard.

Imported only when the flag is given: tensorboard is an optional extra (freyvae[tensorboard]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from freyvae_cli.config import TrainConfig
from freyvae_cli.errors import FreyError

INSTALL = 'pip install "freyvae[tensorboard]"'
FIGURES = ("loss", "reconstruction", "kl")  # each for train, val (where there is one) and test
N_FACES = 8  # test faces in the reconstruction grid


def check_installed() -> None:
    """Stop before training when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise FreyError(f"--tensorboard needs the tensorboard package; install it with: {INSTALL}") from None


class TensorBoardLog:
    def __init__(self, logdir: str | Path, cfg: TrainConfig) -> None:
        check_installed()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(logdir))
        self.cfg = cfg

    def epoch(self, record: dict, model, x_test: torch.Tensor) -> None:
        """Scalars of one epoch record (nats per image), the test set's KL per latent dimension, and
        every checkpoint_every epochs the first test faces above their reconstructions."""
        from freyvae_cli import figures, latent

        step = record["epoch"]
        for figure in FIGURES:
            for split in ("train", "val", "test"):
                key = f"{split}_{figure}" if figure != "loss" else f"{split}_loss"
                if record.get(key) is not None:
                    self.writer.add_scalar(f"{figure}/{split}", record[key], step)
        was_training = model.training
        model.eval()
        x = x_test.cpu()
        for d, kl in enumerate(latent.kl_per_dim(model, x)):
            self.writer.add_scalar(f"kl_per_dim/{d:02d}", float(kl), step)
        every = self.cfg.checkpoint_every
        if every > 0 and step % every == 0:
            originals, recons = latent.reconstruct(model, x[:N_FACES])
            grid = np.asarray(figures.face_grid([originals, recons], scale=2), dtype=np.float32) / 255.0
            self.writer.add_image("reconstructions", grid[None], step)
        model.train(was_training)
        self.writer.flush()

    def close(self, history: list[dict]) -> None:
        """The settings as hparams, with the final and best figures as their metrics."""
        hparams = {k: v for k, v in self.cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
        last = history[-1] if history else {}
        metrics = {f"hparam/{k}": float(last[k]) for k in ("train_loss", "test_loss", "test_kl") if k in last}
        from freyvae_cli.runs import best_epoch

        best = best_epoch(history)
        if best is not None:
            metrics["hparam/best_val_loss"] = float(best["val_loss"])
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.close()
