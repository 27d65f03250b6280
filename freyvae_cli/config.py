"""Training settings: one plain dataclass, stored whole in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

LIKELIHOODS = ("bernoulli", "logistic", "categorical")
PRECISIONS = ("auto", "fp32", "bf16")

# Settings that must match when a run is resumed: they change the model, the data or the maths.
RESUME_MUST_MATCH = (
    "latent_dim", "likelihood", "batch_size", "lr", "beta", "kl_warmup",
    "test_fraction", "split_seed", "seed", "precision",
)


@dataclass
class TrainConfig:
    data: str = "data/frey_rawface.mat"
    out: str = "runs"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    latent_dim: int = 20
    likelihood: str = "bernoulli"
    beta: float = 1.0
    kl_warmup: int = 0  # epochs over which the KL weight rises linearly from 0 to beta
    test_fraction: float = 0.2
    split_seed: int = 0
    seed: int = 0
    checkpoint_every: int = 10
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast where the CPU/GPU does it natively, else fp32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
