"""Make a pretrained model shipped in freyvae_cli/pretrained/ from a finished training run.

    python scripts/make_pretrained.py pixelvae runs/pretrained/pixelvae-a/vae_best_model.pth \
        --same-as runs/pretrained/pixelvae-b/vae_best_model.pth --data ../shared/data/frey_rawface.mat \
        --command "freyvae train --model pixelvae --split literature"

Keeps the run's weights, config, split and history; leaves out the optimizer's and generators'
state (and there are never faces in a checkpoint). Adds the test faces' latent means and
log-variances (`summary`, for the commands that work without the data file), PixelVAE's fitted
prior (as `train` stores it; fitted here for a run made before it did), and a model card:
the command, the figures `freyvae evaluate --iw-samples 0 --realism` measures on the packaged
file, the data's pixel hash and source, the date, and whether a second run of the same command
(--same-as) gave the same weights. Then writes the file's SHA-256 into
freyvae_cli/pretrained/__init__.py.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

from freyvae_cli import checkpoint as ck
from freyvae_cli import latent, prior
from freyvae_cli.data.frey import pixel_hash
from freyvae_cli.data.sources import load_data

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "freyvae_cli" / "pretrained"
KEEP = ("epoch", "split", "history", "data_hash", "versions")
OTHER_THREADS = ("; this holds for the same number of torch threads: with another, torch may add its sums in "
                 "another order, and the weights may differ")
WHAT = {
    "seed": "the seed's VAE (conv 32-64-128, 20-d latent, BCE + KL), default settings, 30 epochs",
    "pixelvae": "PixelVAE with its default settings under the literature protocol (split seed 123), "
                "at its best validation epoch",
}


def largest_difference(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def reproduced(run: Path, again: Path) -> str:
    """Whether a second run of the command gave the same weights, in words. `again` is the second
    run's checkpoint of the same epoch, or its folder where it was stopped early: then its periodic
    checkpoints are compared with the first run's of the same epochs."""
    if again.is_file():
        worst = largest_difference(ck.load(run)["model"], ck.load(again)["model"])
        if worst == 0.0:
            return "a second run of the command on the same machine gave the same weights, bit for bit"
        return f"a second run of the command on the same machine gave weights within {worst:.3g} of these"
    epochs = sorted(p.name for p in again.glob("checkpoint_epoch*.pth") if (run.parent / p.name).exists())
    worst = max(largest_difference(ck.load(run.parent / e)["model"], ck.load(again / e)["model"]) for e in epochs)
    at = ", ".join(str(int(e[16:19])) for e in epochs)
    if worst == 0.0:
        return (f"a second run of the command on the same machine gave the same weights, bit for bit, at epochs {at} "
                "(it was stopped there)")
    return f"a second run of the command on the same machine gave weights within {worst:.3g} at epochs {at}"


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def evaluate(name: str, path: Path, data: Path) -> dict:
    """What `freyvae evaluate` says of a packaged file: the card's figures."""
    cmd = [sys.executable, "-m", "freyvae_cli", "evaluate", "-c", str(path), "--data", str(data),
           "--iw-samples", "0", "--realism", "--json", "--quiet"]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    figures = {"units": "nats per image (bits/dim for the discrete likelihood)",
               "test_neg_elbo": round(result["neg_elbo"], 3), "kl": round(result["kl"], 3),
               "active_units": result["active_units"], "test_faces": result["n_images"]}
    if result["bits_per_dim"]:
        figures["bits_per_dim"] = round(result["bits_per_dim"]["neg_elbo"], 4)
    r = result["realism"]
    figures["realism"] = {"accuracy": round(r["accuracy"], 3), "accuracy_sd": round(r["accuracy_sd"], 3),
                          "control": round(r["control_accuracy"], 3),
                          "samples_nearest_train_rms": round(r["samples_nearest_train_rms"], 2),
                          "test_nearest_train_rms": round(r["held_out_nearest_train_rms"], 2)}
    figures["measured_by"] = f"freyvae evaluate --pretrained {name} --iw-samples 0 --realism (seed 0)"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(WHAT))
    parser.add_argument("run", type=Path, help="the run's checkpoint")
    parser.add_argument("--same-as", type=Path, required=True,
                        help="a second run of the command: its checkpoint of the same epoch, or its folder")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--command", required=True, help="the command that trained it, as a user types it")
    args = parser.parse_args()

    run = ck.load(args.run)
    model = ck.build_model(run, args.run)
    faces, _ = load_data(args.data)
    if pixel_hash(faces) != run["data_hash"]:
        sys.exit(f"{args.data} is not the data {args.run} was trained on")
    mu, logvar = latent.encode(model, latent.split_images(run, faces, "test")[0])
    config = {**run["config"], "data": "data/frey_rawface.mat", "out": "runs"}  # no path of this machine
    shipped = {k: run[k] for k in KEEP} | {
        "model": {k: v.contiguous() for k, v in run["model"].items()}, "config": config,
        "data_source": {"kind": "mat", "path": "data/frey_rawface.mat", "images": len(faces)},
        "summary": {"mu": mu.float().contiguous(), "logvar": logvar.float().contiguous()},
    }
    if run["config"]["model"] in prior.FITTED_FOR and "prior" not in run:  # a run made before train stored it
        shipped["prior"] = prior.as_state(latent.fitted_prior(model, latent.split_images(run, faces, "train")[0]))
    elif "prior" in run:
        shipped["prior"] = run["prior"]
    out = SHIPPED / f"{args.name}.pth"
    ck.save(out, shipped)
    threads = torch.get_num_threads()
    shipped["card"] = {
        "model": WHAT[args.name], "epoch": run["epoch"],
        "command": args.command,
        "made": f"{datetime.date.today()} on {cpu()}, CPU, {threads} torch threads, "
                + ", ".join(f"{k} {v}" for k, v in run["versions"].items()),
        "reproduced": reproduced(args.run, args.same_as) + OTHER_THREADS,
        "prior": "the Gaussian fitted to its training faces' posteriors once trained (freyvae_cli/prior.py)"
                 if "prior" in shipped else "N(0, I)",
        "figures": evaluate(args.name, out, args.data),
        "data": {"pixel_sha256": run["data_hash"], "faces": len(faces),
                 "source": "Brendan Frey's frey_rawface.mat (1965 frames of one face, 28x20, 8-bit grey), "
                           "from Sam Roweis' data page: https://cs.nyu.edu/~roweis/data/frey_rawface.mat "
                           "(`freyvae download`)"},
    }
    ck.save(out, shipped)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    init = SHIPPED / "__init__.py"
    text = re.sub(rf'"{args.name}": "[0-9a-f]*"', f'"{args.name}": "{digest}"', init.read_text())
    init.write_text(text)
    print(json.dumps(shipped["card"], indent=1))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), sha256 {digest}")


if __name__ == "__main__":
    main()
