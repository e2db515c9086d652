"""Speed-up of every rung of OUT/rungs.pkl over the original, side by side in one process (argument: runs)."""
import os
OUT = os.environ.get("OUT", "/tmp/keep_ladder")
import pickle, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np, onnx
from onnx_gkp.runtime import median_latency_ms
import real_data
d = pickle.load(open(os.path.join(OUT, "rungs.pkl"), "rb"))
models = {"original": onnx.load_from_string(d["original"])}
seen = {}
for i, r in enumerate(d["rungs"]):
    if r["model"] not in seen:
        seen[r["model"]] = i
        models[str(i)] = onnx.load_from_string(r["model"])
x = real_data.fashion_mnist("t10k")[0][:1].astype(np.float32)
t = median_latency_ms(models, {onnx.load_from_string(d["original"]).graph.input[0].name: x}, int(sys.argv[1]) if len(sys.argv) > 1 else 200)
speed = {}
for i, r in enumerate(d["rungs"]):
    speed[i] = t["original"] / t[str(seen[r["model"]])]
pickle.dump(speed, open(os.path.join(OUT, "speed.pkl"), "wb"))
print({k: round(v, 3) for k, v in speed.items()})
