import os
# Tests run on 2 shared cores, often under pytest-xdist: one thread per worker avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("SMALLSEL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch
torch.set_num_threads(1)

import subprocess, sys

GLOO_ABORT = "terminate called without an active exception"  # seen in CI: a gloo thread aborting a rank at exit (not our code)

def launch_ranks(n:int, *args, env:dict|None=None, timeout:float=300, retry:bool=True)->subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node n ARGS` (standalone: a free port, so torchrun tests running side by side
    under pytest-xdist never share one); rerun once when a rank died of the gloo abort above (`.retried` says so)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *map(str, args)]
    env = {**os.environ, "SMALLSEL_PROGRESS": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    retried = bool(retry and p.returncode and GLOO_ABORT in p.stderr)
    if retried:
        print(f"rank aborted by gloo, rerunning:\n{p.stderr[-2000:]}", file=sys.stderr)
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    p.retried = retried
    return p

def check_ranks(p:subprocess.CompletedProcess)->subprocess.CompletedProcess:
    "Fail with the ranks' output when the launch failed."
    if p.returncode: raise AssertionError(f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p
