"""`python -m harness method=sd pair=smollm2-135m__smol-draft dataset=tiny` — the Hydra app (`-m` for sweeps).

Exit codes: 0 done (every cell finished; single failed samples are recorded as such), 1 crash (or the disk
filled up), 2 bad input or setup (nothing was marked finished), 3 the cell is held by another process, 4 every
sample failed, or the first ones failed alike (a setup fault): not marked finished. A sweep (`-m`, one cell after
another in this process) goes on past a cell that fails so and exits with the first such cell's code; under
launchers that run each cell as a job of its own, that job fails with the code."""
from __future__ import annotations

import errno
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness import HarnessError
from harness.run import run_cell

log = logging.getLogger("harness")
FAILED_CELLS: list[tuple[str, int]] = []  # (the job's overrides, exit code) of a sweep's failed cells


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_cell(cfg)
    except HarnessError as err:  # the user's to fix: say what and how, without a traceback wall
        log.error("%s", err)
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN or not hydra_cfg.launcher._target_.endswith("BasicLauncher"):
            sys.exit(err.exit_code)  # one cell, or a job of its own (slurm, joblib): the launcher sees it fail
        FAILED_CELLS.append((" ".join(hydra_cfg.overrides.task), err.exit_code))
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
            raise
        log.error("cannot write the results (%s): every sample recorded so far is kept; make room and rerun to "
                  "resume", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
    if FAILED_CELLS:
        print(f"error: {len(FAILED_CELLS)} cell(s) of the sweep did not finish (their errors are above):\n  "
              + "\n  ".join(f"exit {code}: {job}" for job, code in FAILED_CELLS), file=sys.stderr)
        sys.exit(FAILED_CELLS[0][1])
