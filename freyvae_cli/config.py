"""Training settings: one plain dataclass, stored whole in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

LIKELIHOODS = ("bernoulli", "logistic", "categorical")
PRECISIONS = ("auto", "fp32", "bf16")
MODELS = ("seed", "pixelvae")
# What `--model pixelvae` changes unless the option is given: its latent size, likelihood (the
# literature's 256-way categorical), batch, KL warm-up and learning-rate schedule, as measured
# (README, "Numbers").
MODEL_DEFAULTS = {"pixelvae": {"latent_dim": 64, "likelihood": "categorical", "batch_size": 64, "kl_warmup": 10,
                               "epochs": 200, "lr": 2e-3, "lr_schedule": "cosine"}}
LITERATURE_SEED = 123  # the first of the published split seeds 123, 321, 231

# Settings that must match when a run is resumed: they change the model, the data or the maths.
RESUME_MUST_MATCH = (
    "latent_dim", "likelihood", "batch_size", "lr", "lr_schedule", "beta", "dropout", "kl_warmup",
    "test_fraction", "split_seed", "seed", "precision", "model", "split",
)


@dataclass
class TrainConfig:
    data: str = "data/frey_rawface.mat"
    out: str = "runs"
    model: str = "seed"  # seed: the seed README's VAE; pixelvae: its encoder, a PixelCNN decoder head
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant, or cosine: from lr down to 0 over the epochs
    latent_dim: int = 20
    likelihood: str = "bernoulli"
    beta: float = 1.0
    dropout: float = 0.0  # pixelvae: dropout in the PixelCNN's residual blocks, in training
    kl_warmup: int = 0  # epochs over which the KL weight rises linearly from 0 to beta
    test_fraction: float = 0.2
    split: str = "random"  # random: test_fraction held out; literature: 1565/200/200, Berg et al.'s code
    split_seed: int = 0
    patience: int = 0  # with a validation split: stop after this many epochs without improvement (0: never)
    seed: int = 0
    checkpoint_every: int = 10
    device: str = "auto"
    tensorboard: str = ""  # a folder for TensorBoard event files; "" writes none
    precision: str = "auto"  # auto: bf16 autocast where the CPU/GPU does it natively, else fp32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
