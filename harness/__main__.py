"""`python -m harness method=sd pair=smollm2-135m__smol-draft dataset=tiny` — the Hydra app (`-m` for sweeps)."""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from harness import HarnessError
from harness.run import run_cell

log = logging.getLogger("harness")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_cell(cfg)
    except HarnessError as err:  # the user's to fix: say what and how, without a traceback wall
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
