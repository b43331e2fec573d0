"""Train a demo model with any lossplug loss, optimizer and scheduler, chosen on the command line.

    python scripts/train.py                                  # digits, cross-entropy, AdamW
    python scripts/train.py loss=focal loss.gamma=3 optimizer.lr=3e-4
    python scripts/train.py experiment=segmentation loss=dice_ce loss.dice_weight=0.5
    python scripts/train.py experiment=vae loss.weights.kl=0.003 # a VAE: its KL from the model
    python scripts/train.py -m loss=cross_entropy,focal      # a sweep
    python scripts/train.py --help                           # every group and option

The app's config is the repository's ``conf/`` (``train.yaml``, ``data``, ``model``,
``trainer``, ``logger``, ``experiment``, ``pairing``); the ``loss``, ``optimizer``,
``scheduler`` and ``diagnostics`` groups come from the installed package (``lossplug/conf``),
as in any Hydra app. It works from any directory.
A bad override stops the script with one line saying what to fix (exit code 2 for an override
that cannot be parsed, 1 otherwise); ``HYDRA_FULL_ERROR=1`` shows the full trace instead.
"""

import sys
import warnings

from omegaconf import DictConfig

from lossplug.config import lossplug_main
from lossplug.demo.launch import follower_overrides


@lossplug_main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # a deprecation inside Lightning (its use of torch's LeafSpec), nothing a user of this
    # script can act on; set here, where a job submitit runs from a pickle of main sets it too
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    from lossplug.demo.training import train  # Lightning is loaded once the command line is good

    return train(cfg).get("val/loss")


if __name__ == "__main__":
    sys.argv += follower_overrides(sys.argv[1:])  # torchrun, srun: one output folder, rank 0's
    main()
