"""Sweeps end to end on small random models: the smoke preset killed mid-way and resumed reports exactly what an
uninterrupted (sharded, parallel) sweep reports; the SLURM launcher config runs against a fake SLURM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.report import CELL_KEYS, load, status, summarize
from tests.conftest import ACCEPT_WEAK, ROOT, harness_cli, pair_overrides

# The smoke preset (ar and sd on the tiny set), on all 10 prompts so that a kill lands inside the sd cell.
SWEEP = ["-m", "+sweep=smoke", "n_samples=null", "max_new_tokens=48", "progress=false"]
SAME = ["run", "pair", "dataset", "task", "method", "turn", "n_ok", "n_failed", "new_tokens", "tau",
        "acceptance_rate", "lossless", "position_acceptance", "n_paired", "source"]  # every report column but timings
SD = "sd_M_g5_w1"


def lines(cell: Path) -> list[dict]:
    return [json.loads(x) for x in (cell / "samples.jsonl").read_text().splitlines()]


def wait_for(condition, seconds: float = 240) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_killed_sweep_resumes_and_reports_like_an_uninterrupted_one(tmp_path, random_pair_dir):
    args = [*SWEEP, *pair_overrides(random_pair_dir)]
    run = tmp_path / "results" / "smoke" / "tiny-random" / "tiny"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args, *ACCEPT_WEAK], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    started = wait_for(lambda: (run / "ar" / "summary.json").exists() and (run / SD / "samples.jsonl").exists()
                       and len((run / SD / "samples.jsonl").read_text().splitlines()) >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert started and not (run / SD / "summary.json").exists(), "the sweep finished before it could be killed"
    partial = lines(run / SD)
    assert status(tmp_path / "results").set_index("cell").state.to_dict() == {
        "smoke/tiny-random/tiny/ar": "done", f"smoke/tiny-random/tiny/{SD}": "partial"}

    resumed = harness_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "skip" in resumed.stderr  # the finished ar cell is not decoded again
    for tag in ("ar", SD):
        keys = [(r["id"], r["turn"]) for r in lines(run / tag)]
        assert len(keys) == len(set(keys)) == 12  # 10 prompts, two of them with a second turn
    assert lines(run / SD)[: len(partial)] == partial

    # The same sweep uninterrupted, elsewhere, each cell split into two shards, cells run two at a time.
    clean = harness_cli(*args, "output_root=clean", "++dataset.num_shards=2", "++dataset.shard=0,1",
                        "hydra/launcher=parallel", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    shards = tmp_path / "clean" / "smoke" / "tiny-random" / "tiny"
    assert sorted(p.name for p in shards.iterdir()) == [f"{t}_shard{i}of2" for t in ("ar", SD) for i in (0, 1)]
    assert set(status(tmp_path / "clean").state) == {"done"}

    killed, whole = load(tmp_path / "results" / "smoke"), load(tmp_path / "clean" / "smoke")
    order = ["method", "id", "turn"]
    assert (killed.sort_values(order).output_ids.tolist() == whole.sort_values(order).output_ids.tolist())
    a, b = summarize(killed, CELL_KEYS)[SAME], summarize(whole, CELL_KEYS)[SAME]
    pd.testing.assert_frame_equal(a, b)
    assert (a.set_index("method").loc[[SD]].lossless == "exact").all()

    report = harness_cli(str(tmp_path / "results"), cwd=tmp_path, module="harness.report")
    assert report.returncode == 0 and (tmp_path / "results" / "tables" / "table1.tex").exists()


FAKE_SBATCH = '''#!{python}
"""Fake sbatch: keeps each submitted script in $FAKE_SLURM_LOG, answers as SLURM does, and runs the array's
tasks one after another in the background (after returning, as on a cluster) with the variables SLURM sets."""
import os, re, subprocess, sys
from pathlib import Path

log = Path(os.environ["FAKE_SLURM_LOG"])
if sys.argv[1] == "--run":
    job, script, n = sys.argv[2:]
    for i in range(int(n)):
        env = {{**os.environ, "SLURM_JOB_ID": f"{{job}}{{i}}", "SLURM_ARRAY_JOB_ID": job, "SLURM_ARRAY_TASK_ID": str(i),
               "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0",
               "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": "localhost"}}
        with open(log / f"{{job}}_{{i}}.log", "w") as out:
            subprocess.run(["bash", script], env=env, stdout=out, stderr=subprocess.STDOUT)
    sys.exit(0)
log.mkdir(exist_ok=True)
job = str(1000 + len(list(log.glob("*.sh"))))
script = log / f"{{job}}.sh"
script.write_text(Path(sys.argv[-1]).read_text())
array = re.search(r"#SBATCH --array=0-(\\d+)", script.read_text())
subprocess.Popen([sys.executable, __file__, "--run", job, str(script), str(int(array.group(1)) + 1 if array else 1)],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {{job}}")
'''
FAKE_SRUN = '''#!/bin/bash
# Fake srun: drop srun's own options, run the command.
while [[ "$1" == --* ]]; do if [[ "$1" == --unbuffered ]]; then shift; else shift 2; fi; done
exec "$@"
'''


@pytest.fixture
def fake_slurm(tmp_path) -> dict:
    """sbatch, srun, sacct (no information yet: submitit then waits for the results) and scancel on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH.format(python=sys.executable)), ("srun", FAKE_SRUN),
                       ("sacct", "#!/bin/bash\necho 'JobID|State|NodeList'\n"), ("scancel", "#!/bin/bash\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SLURM_LOG": str(tmp_path / "slurm")}


def test_slurm_launcher_submits_a_job_array_that_runs_every_cell(tmp_path, random_pair_dir, fake_slurm):
    proc = harness_cli("-m", "+sweep=smoke", "n_samples=2", "max_new_tokens=8", "progress=false",
                       "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.array_parallelism=1",
                       *pair_overrides(random_pair_dir), cwd=tmp_path, env=fake_slurm, timeout=240)
    logs = "\n".join(p.read_text() for p in (tmp_path / "slurm").glob("*.log"))
    assert proc.returncode == 0, proc.stderr + logs
    (script,) = (tmp_path / "slurm").glob("*.sh")
    text = script.read_text()
    for flag in ("--array=0-1%1", "--gpus-per-node=1", "--cpus-per-task=1", "--time=240", "--mem=64GB",
                 "--requeue", "--signal=USR2@120", "--open-mode=append"):
        assert f"#SBATCH {flag}" in text, flag
    assert "export OMP_NUM_THREADS=1" in text
    table = status(tmp_path / "results").set_index("cell")
    assert table.state.to_dict() == {"smoke/tiny-random/tiny/ar": "done", f"smoke/tiny-random/tiny/{SD}": "done"}


def test_shards_split_the_selected_samples_and_cannot_be_out_of_range():
    from omegaconf import OmegaConf

    from harness import HarnessError
    from harness.data import load_samples

    cfg = OmegaConf.load(ROOT / "conf" / "dataset" / "tiny.yaml")
    every = [s.id for s in load_samples(cfg, 7).samples]
    parts = [[s.id for s in load_samples(OmegaConf.merge(cfg, {"shard": i, "num_shards": 3}), 7).samples]
             for i in range(3)]
    assert parts == [every[0::3], every[1::3], every[2::3]]
    with pytest.raises(HarnessError, match="need 0 <= shard < num_shards"):
        load_samples(OmegaConf.merge(cfg, {"shard": 3, "num_shards": 3}), None)


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml")))
def test_every_sweep_preset_composes_every_cell(sweep):
    """Each preset's grid names methods, datasets and a pair that exist and compose (no typo waits for a cluster)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import methods  # noqa: F401  (registers the method config schemas the method YAMLs extend)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        base = compose("config", overrides=[f"+sweep={sweep}"], return_hydra_config=True)
        params = OmegaConf.to_container(base.hydra.sweeper.params)
        rest = [f"{k}={str(v).split(',')[-1]}" for k, v in params.items() if k not in ("pair", "method", "dataset")]
        for pair in params.get("pair", base.pair.name).split(","):
            for method in params.get("method", base.method.name).split(","):
                for dataset in params.get("dataset", base.dataset.name).split(","):
                    cfg = compose("config", overrides=[f"+sweep={sweep}", f"pair={pair}", f"method={method}",
                                                       f"dataset={dataset}", *rest])
                    assert OmegaConf.to_container(cfg.method, resolve=True)["tag"] and cfg.pair.name == pair
