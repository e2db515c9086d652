"""The --keep search replayed on the rungs of OUT/rungs.pkl, with random 128-image subsets of the
test set playing the held-out part: how often the rung returned keeps the target on the whole
test set. Arguments: strategies ("top1 (current)" is the search before top1_soft, "soft" the one now).
"""
import os
OUT = os.environ.get("OUT", "/tmp/keep_ladder")
import pickle, sys
import numpy as np
from scipy.stats import norm

d = pickle.load(open(os.path.join(OUT, "rungs.pkl"), "rb")); speed = pickle.load(open(os.path.join(OUT, "speed.pkl"), "rb"))
rungs, test_o, labels = d["rungs"], d["test_o"], d["labels"]
acc = np.array([np.mean(r["test_p"].argmax(1) == labels) for r in rungs])
tag = np.array([np.mean(r["test_p"].argmax(1) == test_o.argmax(1)) for r in rungs])
def top1(o, p): return np.mean(p.argmax(1) == o.argmax(1))
def gauss(o, p):
    order = np.argsort(-o, 1)
    so = np.take_along_axis(o, order, 1); sp = np.take_along_axis(p, order, 1)
    dm = (sp[:, :1] - sp[:, 1:]) - (so[:, :1] - so[:, 1:])
    s = np.sqrt(np.mean(dm ** 2, 0)); m = so[:, :1] - so[:, 1:]
    return np.mean(np.prod(norm.cdf(m / np.maximum(s, 1e-12)), 1))
def gauss_rel(o, p):
    """perturbation of the margin relative to the sample's logit scale"""
    order = np.argsort(-o, 1)
    so = np.take_along_axis(o, order, 1); sp = np.take_along_axis(p, order, 1)
    scale = np.std(so, 1, keepdims=True)
    dm = ((sp[:, :1] - sp[:, 1:]) - (so[:, :1] - so[:, 1:])) / scale
    s = np.sqrt(np.mean(dm ** 2, 0)); m = (so[:, :1] - so[:, 1:]) / scale
    return np.mean(np.prod(norm.cdf(m / np.maximum(s, 1e-12)), 1))
def kl(o, p):
    lo = o - o.max(1, keepdims=True); lo = lo - np.log(np.exp(lo).sum(1, keepdims=True))
    lp = p - p.max(1, keepdims=True); lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
    return np.mean(np.sum(np.exp(lo) * (lo - lp), 1))
def soft(o, p):
    """pruned softmax probability of the original's top class, over the original's own"""
    po = np.exp(o - o.max(1, keepdims=True)); po /= po.sum(1, keepdims=True)
    pp = np.exp(p - p.max(1, keepdims=True)); pp /= pp.sum(1, keepdims=True)
    t = o.argmax(1)
    return 1 - np.mean(np.abs(po[np.arange(len(t)), t] - pp[np.arange(len(t)), t]))

def bisect(n, est, meas, keep, cap=9, verify=True):
    seen = {}
    def at(i):
        if i not in seen: seen[i] = (meas(i), est(i))
        return seen[i]
    low, high = -1, n
    while high - low > 1 and len(seen) < cap:
        mid = (low + high) // 2
        if at(mid)[1] >= keep: low = mid
        else: high = mid
    if not verify: return low
    i = low
    while i >= 0 and len(seen) < cap and min(at(i)) < keep: i -= 1
    ok = [j for j in seen if min(seen[j]) >= keep]
    return max(ok) if ok else -1

def run(name, figs_fn, held=None, trials=300, keeps=(0.99, 0.985, 0.98, 0.975, 0.97, 0.965, 0.96, 0.95)):
    rng = np.random.default_rng(1)
    subsets = [rng.choice(len(test_o), SIZE, replace=False) for _ in range(trials)]
    print(name)
    for keep in keeps:
        got = []
        for s in subsets:
            cache = {}
            def f(i):
                if i not in cache: cache[i] = figs_fn(test_o[s], rungs[i]["test_p"][s])
                return cache[i]
            r = bisect(len(rungs), lambda i: f(i)[1], lambda i: f(i)[0], keep)
            got.append(r)
        got = np.array(got)
        a = np.where(got >= 0, acc[np.maximum(got, 0)], 0.927); sp = np.array([speed[max(g, 0)] for g in got])
        ta = np.where(got >= 0, tag[np.maximum(got, 0)], 1.0)
        hf = None
        if held:
            hcache = {}
            def hfn(i):
                if i not in hcache: hcache[i] = figs_fn(rungs[i]["held_o"], rungs[i]["held_p"])
                return hcache[i]
            hf = bisect(len(rungs), lambda i: hfn(i)[1], lambda i: hfn(i)[0], keep)
        print(f"  keep {keep}: acc mean {a.mean():.4f} p10 {np.quantile(a, .1):.4f}  test-agree>=keep {np.mean(ta >= keep):.2f}  speed {sp.mean():.2f}  P(acc>=.917&sp>=1.5) {np.mean((a >= .917) & (sp >= 1.5)):.2f}  rung med {np.median(got):.0f} [{np.quantile(got,.1):.0f},{np.quantile(got,.9):.0f}]  real-held rung {hf} acc {acc[hf] if hf is not None and hf >= 0 else None}")

SIZE = int(__import__("os").environ.get("SIZE", 128))
S = {
 "top1 (current)": lambda o, p: (top1(o, p), top1(o, p)),
 "gauss": lambda o, p: (top1(o, p), gauss(o, p)),
 "gauss_rel": lambda o, p: (top1(o, p), gauss_rel(o, p)),
 "soft": lambda o, p: (top1(o, p), soft(o, p)),
}
for k in sys.argv[1:]:
    run(k, S[k], held=True)
print("tag", np.round(tag, 4))
