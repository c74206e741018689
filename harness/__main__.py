"""`python -m harness method=sd pair=smollm2-135m__smol-draft dataset=tiny` — the Hydra app (`-m` for sweeps).

Exit codes: 0 done (every cell finished; single failed samples are recorded as such), 1 crash (or the disk
filled up), 2 bad input or setup (nothing was marked finished), 3 the cell is held by another process, 4 every
sample failed, or the first ones failed alike (a setup fault): not marked finished. A sweep (`-m`, one cell after
another in this process) goes on past a cell that fails so and exits with the first such cell's code; under
launchers that run each cell as a job of its own, that job fails with the code.

At its end, every run this process decoded into gets the lossless check (harness.lossless: greedy outputs that
differ from ar's, judged by teacher forcing); a LOSSY verdict is logged as an error and shows in the report."""
from __future__ import annotations

import errno
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness import CONF, HarnessError, plugins
from harness.records import cell_dir
from harness.run import run_cell

log = logging.getLogger("harness")
FAILED_CELLS: list[tuple[str, int]] = []  # (the job's overrides, exit code) of a sweep's failed cells
RUNS: set = set()  # the run directories this process decoded into: checked for losslessness at its end


@hydra.main(config_path=str(CONF), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        plugins.load(list(cfg.plugins))  # again in a launcher's own job process; a no-op where already imported
        run_cell(cfg)
        RUNS.add(cell_dir(cfg).parents[2])  # output_root/run_name
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


def check_lossless(runs) -> None:
    """The lossless verdict of every method cell of `runs` (harness.lossless), logged; the check failing (e.g. a
    dataset that cannot be read again) is said, with the command that retries it, and ends nothing."""
    from harness.lossless import check_tree

    for root in sorted(runs):
        try:
            rows = check_tree(root)
        except Exception as err:  # noqa: BLE001 - the records are written; the check can be rerun on them
            log.error("lossless check of %s failed (%s: %s); rerun it with: python -m harness.lossless %s", root,
                      type(err).__name__, err, root)
            continue
        for row in rows:
            (log.error if row["n_lossy"] else log.info)("lossless: %s: %s", row["cell"], row["verdict"])


def cli() -> None:
    """`python -m harness` (and the `spec-harness` command): plugins first, the cells, then their lossless check."""
    try:
        sys.argv = plugins.with_search_path(sys.argv, plugins.load(plugins.named_on(sys.argv[1:])))
    except HarnessError as err:
        log.error("%s", err)
        sys.exit(err.exit_code)
    main()
    check_lossless(RUNS)
    if FAILED_CELLS:
        print(f"error: {len(FAILED_CELLS)} cell(s) of the sweep did not finish (their errors are above):\n  "
              + "\n  ".join(f"exit {code}: {job}" for job, code in FAILED_CELLS), file=sys.stderr)
        sys.exit(FAILED_CELLS[0][1])


if __name__ == "__main__":
    cli()
