"""Every rung of the --keep ladder on the bundled model, measured: each allowance refitted and
scored on the held-out samples as the search would, with its logits on the held-out part and the
10,000 test images (OUT/rungs.pkl). Patches api internals; a tool for docs/results.md ("Fidelity
at speed: bundled"), not a test. Then keep_ladder_speed.py, keep_ladder_replay.py.

    PYTHONPATH=. python tools/keep_ladder.py   # about 40 minutes on a loaded 2-core machine
"""
import os
OUT = os.environ.get("OUT", "/tmp/keep_ladder")
os.makedirs(OUT, exist_ok=True)
import sys, time, pickle
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import onnx
from bench_quality import TASKS, load_model, outputs
import onnx_gkp
import onnx_gkp.api as api

task = TASKS["bundled"]
original, shapes = load_model("bundled")
name = original.graph.input[0].name
images = task.inputs()
calibration = {name: task.calibration(512)}
rungs = []
state = {}
real_fid, real_asm = api._fidelity, api._assemble

def asm(*a, **k):
    pruned, report = real_asm(*a, **k)
    state["report"] = report
    return pruned, report

def fid(pruned, data, metrics, build):
    out = real_fid(pruned, data, metrics, build)
    if state.get("collect"):
        full = api.restored(build["original"], build["arrays"])
        t = state["report"].totals
        rungs.append(dict(allowance=state["allowance"], macs=t["conv_macs_after"] / t["conv_macs_before"],
                          held_o=api.outputs_on(full, data.held, threads=1)[0], held_p=api.outputs_on(pruned, data.held, threads=1)[0],
                          test_p=outputs(pruned, images, 500), model=pruned.SerializeToString(), fidelity=out))
        print(len(rungs), state["allowance"], rungs[-1]["macs"], out, time.strftime("%X"), flush=True)
    return out

def every(levels, score, keep):
    state["collect"] = True
    print("levels", levels, flush=True)
    trail = []
    for a in levels:
        state["allowance"] = a
        trail.append((a, score(a)))
    state["collect"] = False
    ok = [a for a, s in trail if s >= keep]
    return (max(ok) if ok else None), trail

api._fidelity, api._assemble, api.search = fid, asm, every
pruned, report = onnx_gkp.prune(original, keep=0.99, calibration=calibration, test_shapes=shapes or None, latency_runs=0)
test_o = outputs(original, images, 500)
pickle.dump(dict(rungs=rungs, test_o=test_o, labels=np.asarray(__import__("real_data").fashion_mnist("t10k")[1]),
                 original=original.SerializeToString()), open(os.path.join(OUT, "rungs.pkl"), "wb"))
print("done", flush=True)
