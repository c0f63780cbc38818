"""Reference values for the multi-task weighting methods (include/nddr/weighting/).

An independent implementation on explicit per-task gradient VECTORS (K x P), the way the
reference repositories work (LibMTL, MOO's MinNormSolver, CAGrad's SciPy SLSQP, Nash-MTL's
cvxpy concave-convex procedure, Aligned-MTL's Procrustes solver), never on nddr's Gram-matrix
formulation. Writes tests/data/weighting.safetensors (float64), read by
tests/train/weighting_test.cpp. CI never runs this script.

Requires NumPy, SciPy and cvxpy with ECOS, e.g.
    python3 -m venv /work/venv-weight && /work/venv-weight/bin/pip install numpy scipy cvxpy ecos
    /work/venv-weight/bin/python tools/reference/weighting.py

File layout:
    c<i>.G        (K, P) task gradients of case i        c<i>.losses  (K,) task losses
    c<i>.m<j>.d   (P,)  shared update of method j         c<i>.m<j>.heads (K,) head weights
    metadata m<j> = the method's spec string (as nddr::weighting::make_weighting parses it);
    nash_ccp.c<i>.d: the update of the references' CCP/ECOS solver (for the record: nddr solves
    the fixed point exactly, m<j>.d holds the exact fixed point found here by SciPy).
The sequences (DWA, UW, GradNorm, RLW) are written as seq.* tensors, described below.

Conventions shared with nddr (docs/weighting.md): random numbers come from nddr's counter-based
generator (include/nddr/core/random.hpp), re-implemented here, so PCGrad's task orders and RLW's
draws are the same streams.
"""
import json
import warnings
import math
import os
import struct
import sys

import numpy as np
import scipy
import scipy.optimize

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "data", "weighting.safetensors")
MASK = (1 << 64) - 1


# ---- nddr's random stream (SplitMix64 finaliser, counter based) ------------------------------

def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class Rng:
    def __init__(self, seed):
        self.seed, self.counter = seed, 0

    def bits(self):
        b = mix64(mix64(self.seed) ^ self.counter)
        self.counter += 1
        return b

    def uniform(self):
        return (self.bits() >> 11) * 2.0 ** -53

    def normal(self):
        u1 = 1.0 - self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586476925 * u2)

    def below(self, n):
        return self.bits() % n

    def shuffled(self, n):
        """Fisher-Yates as nddr::weighting::PcGrad::draw_order."""
        order = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return order


# ---- methods on explicit gradient vectors ----------------------------------------------------

def ew(G, losses, mean=False):
    w = np.full(len(G), 1.0 / len(G) if mean else 1.0)
    return w @ G, w


def pcgrad(G, seed=0, eps=1e-8, mean=False):
    """LibMTL PCGrad: per task a fresh shuffle of all K tasks, projection on original g_j."""
    rng = Rng(seed)
    K = len(G)
    out = np.zeros(G.shape[1])
    for i in range(K):
        gpc = G[i].copy()
        for j in rng.shuffled(K):
            dot = gpc @ G[j]
            if dot < 0:
                gpc -= dot / (G[j] @ G[j] + eps) * G[j]
        out += gpc
    return out / K if mean else out


def _from2(v11, v12, v22):
    if v12 >= v11:
        return 0.999, v11
    if v12 >= v22:
        return 0.001, v22
    gamma = -1.0 * ((v12 - v22) / (v11 + v22 - 2 * v12))
    return gamma, v22 + gamma * (v12 - v22)


def _proj_simplex(y):
    m = len(y)
    s = np.flip(np.sort(y))
    tmpsum, tmax_f = 0.0, (np.sum(y) - 1.0) / m
    for i in range(m - 1):
        tmpsum += s[i]
        tmax = (tmpsum - 1) / (i + 1.0)
        if tmax > s[i + 1]:
            tmax_f = tmax
            break
    return np.maximum(y - tmax_f, 0.0)


def _next_point(cur, grad):
    n = len(cur)
    pg = grad - np.sum(grad) / n
    tm1 = -1.0 * cur[pg < 0] / pg[pg < 0]
    tm2 = (1.0 - cur[pg > 0]) / pg[pg > 0]
    t = 1.0
    if len(tm1[tm1 > 1e-7]) > 0:
        t = np.min(tm1[tm1 > 1e-7])
    if len(tm2[tm2 > 1e-7]) > 0:
        t = min(t, np.min(tm2[tm2 > 1e-7]))
    return _proj_simplex(pg * t + cur)


def min_norm(vecs, fw=False, max_iter=250, stop=1e-5):
    """MOO MinNormSolver on explicit vectors (iteration counter incremented, as LibMTL)."""
    K = len(vecs)
    dps = np.array([[vecs[i] @ vecs[j] for j in range(K)] for i in range(K)])
    dmin, sol = None, None
    for i in range(K):
        for j in range(i + 1, K):
            c, d = _from2(dps[i, i], dps[i, j], dps[j, j])
            if dmin is None or d < dmin:
                dmin, sol = d, ((i, j), c)
    w = np.zeros(K)
    w[sol[0][0]] = sol[1]
    w[sol[0][1]] = 1 - sol[1]
    if K < 3:
        return w
    for _ in range(max_iter):
        if fw:
            t = int(np.argmin(dps @ w))
            nc, _ = _from2(w @ dps @ w, w @ dps[:, t], dps[t, t])
            new = nc * w
            new[t] += 1 - nc
        else:
            p = _next_point(w, -1.0 * (dps @ w))
            nc, _ = _from2(w @ dps @ w, w @ dps @ p, p @ dps @ p)
            new = nc * w + (1 - nc) * p
        if np.sum(np.abs(new - w)) < stop:
            return w
        w = new
    return w


def mgda(G, losses, norm="none", fw=False):
    """LibMTL MGDA: solve on normalised gradients, apply the weights to them."""
    n = np.ones(len(G))
    if norm == "l2":
        n = np.linalg.norm(G, axis=1)
    elif norm == "loss":
        n = np.array(losses, dtype=float)
    elif norm == "loss+":
        n = np.array(losses) * np.linalg.norm(G, axis=1)
    Gn = G / n[:, None]
    w = min_norm(list(Gn), fw=fw)
    return w @ Gn


def cagrad(G, c=0.5, rescale=1, ftol=1e-15):
    """CAGrad (original code, K tasks): SciPy minimize from 1/K with bounds and sum = 1
    (SLSQP), tolerance tightened from SciPy's default so that the reference is exact."""
    K = len(G)
    GG = G @ G.T
    g0_norm = math.sqrt(GG.mean() + 1e-8)
    x0 = np.ones(K) / K
    b = x0.copy()
    cc = c * g0_norm + 1e-8

    def obj(x):
        return x @ GG @ b + cc * math.sqrt(x @ GG @ x + 1e-8)

    res = scipy.optimize.minimize(obj, x0, bounds=[(0, 1)] * K,
                                  constraints=({"type": "eq", "fun": lambda x: 1 - sum(x)},),
                                  method="SLSQP", options={"ftol": ftol, "maxiter": 10000})
    w = res.x
    gw = w @ G
    lam = cc / (np.linalg.norm(gw) + 1e-8)
    d = G.mean(0) + lam * gw
    return d / [1.0, 1 + c ** 2, 1 + c][rescale]


def imtl_g(G):
    """IMTL-G closed form on vectors (D, U rows, alpha = g1 U^T (D U^T)^-1)."""
    u = G / np.linalg.norm(G, axis=1, keepdims=True)
    D = G[0:1] - G[1:]
    U = u[0:1] - u[1:]
    try:
        inv = np.linalg.inv(D @ U.T)
    except np.linalg.LinAlgError:  # parallel gradients: retry as the Nash/SamsungLabs code
        inv = np.linalg.inv(D @ U.T + 1e-8 * np.eye(len(D)))
    a = G[0] @ U.T @ inv
    alpha = np.concatenate([[1 - a.sum()], a])
    return alpha @ G


def aligned(G, scale="min"):
    """Aligned-MTL Procrustes solver: aligned gradients G^T B, update = their sum."""
    M = G @ G.T
    lam, V = np.linalg.eigh(M)
    tol = lam.max() * max(M.shape) * np.finfo(np.float32).eps
    rank = int(np.sum(lam > tol))
    order = np.argsort(lam)[::-1]
    lam, V = lam[order][:rank], V[:, order][:, :rank]
    if scale == "min":
        s = lam[-1]
    elif scale == "median":
        s = np.sort(lam)[(rank - 1) // 2]  # torch.median: lower median
    else:
        s = lam.mean()
    B = math.sqrt(s) * (V @ np.diag(1 / np.sqrt(lam)) @ V.T)
    aligned_grads = G.T @ B  # (P, K), orthogonal columns of norm sqrt(s)
    return aligned_grads.sum(1)


def clip(d, max_norm):
    if max_norm <= 0:
        return d
    return d * min(1.0, max_norm / (np.linalg.norm(d) + 1e-6))


def nash_fixed_point(G):
    """alpha > 0 with alpha_k (G G^T alpha)_k = 1: the stationary point of
    0.5 |G^T alpha|^2 - sum log alpha, minimised by SciPy (trust-region Newton) in
    x = log(alpha), from alpha_k = 1/||g_k|| (the answer for orthogonal gradients)."""
    def f(x):
        a = np.exp(x)
        return 0.5 * np.sum((G.T @ a) ** 2) - np.sum(x)

    def grad(x):
        a = np.exp(x)
        return a * (G @ (G.T @ a)) - 1.0

    def hess(x):
        a = np.exp(x)
        M = G @ G.T
        return np.diag(a * (M @ a)) + (a[:, None] * M * a[None, :])

    sol = scipy.optimize.minimize(f, -np.log(np.linalg.norm(G, axis=1)), jac=grad, hess=hess,
                                  method="trust-exact", options={"gtol": 1e-14})
    x = sol.x
    for _ in range(3):  # polish to machine precision
        x = x - np.linalg.solve(hess(x), grad(x))
    a = np.exp(x)
    assert np.max(np.abs(grad(x))) < 1e-13, f"Nash fixed point not found: {a}"
    return a


def nash_ccp(G, niter=20):
    """Nash-MTL's solver: the concave-convex sequence solved by cvxpy/ECOS from alpha = 1."""
    import cvxpy as cp
    K = len(G)
    GTG = G @ G.T
    N = np.linalg.norm(GTG)
    Gn = GTG / N
    alpha = cp.Variable(K, nonneg=True)
    prvs = cp.Parameter(K, value=np.ones(K))
    Gp = cp.Parameter((K, K), value=Gn)
    Np = cp.Parameter((1,), value=np.array([N]))
    G_prvs = Gp @ prvs
    phi_alpha = (cp.sum(cp.multiply(1 / prvs, alpha)) - cp.sum(cp.multiply(1 / prvs, prvs))
                 + cp.sum(cp.multiply(1 / G_prvs, Gp @ alpha)) -
                 cp.sum(cp.multiply(1 / G_prvs, G_prvs)))
    G_alpha = Gp @ alpha
    cons = [-cp.log(alpha[i] * Np) - cp.log(G_alpha[i]) <= 0 for i in range(K)]
    prob = cp.Problem(cp.Minimize(cp.sum(G_alpha) + phi_alpha / Np), cons)
    a_prev = np.ones(K)
    for _ in range(niter):
        alpha.value = a_prev
        prvs.value = a_prev
        try:
            prob.solve(solver=cp.ECOS, warm_start=True, max_iters=100)
        except Exception:  # the reference catches everything and keeps the previous alpha
            alpha.value = a_prev
        if alpha.value is None:
            break
        if (np.linalg.norm(Gn @ alpha.value - 1 / (alpha.value + 1e-10)) < 1e-3 or
                np.linalg.norm(alpha.value - a_prev) < 1e-6):
            break
        a_prev = alpha.value
    return a_prev


# ---- cases -----------------------------------------------------------------------------------

def spec_cases():
    """The fact sheet's hand-checked 2-D cases."""
    return [np.array([[1.0, 0.0], [-1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]),
            np.array([[1.0, 0.0], [2.0, 0.0]])]


def random_cases(rs):
    out = []
    for K, P in [(2, 5), (2, 20), (3, 5), (3, 12), (3, 50), (4, 7), (4, 30), (4, 50)]:
        G = rs.normal(size=(K, P))
        # pull the tasks apart so that conflicts (negative inner products) occur
        G[1:] -= 0.6 * G[0]
        G *= rs.uniform(0.3, 3.0, size=(K, 1))
        out.append(G)
    return out


METHODS = [
    "ew", "ew:reduction=mean", "rlw:seed=3",
    "mgda", "mgda:solver=fw", "mgda:norm=l2", "mgda:norm=loss", "mgda:norm=loss+",
    "pcgrad", "pcgrad:seed=7,reduction=mean",
    "cagrad", "cagrad:c=0.4,rescale=0", "cagrad:c=0.2,rescale=2",
    "imtl", "aligned", "aligned:scale=median", "aligned:scale=rmse",
    "nash", "nash:max_norm=0",
]


def run_method(spec, G, losses):
    """(shared update d, head weights)."""
    name, _, opts = spec.partition(":")
    o = dict(kv.split("=") for kv in opts.split(",")) if opts else {}
    K = len(G)
    ones = np.ones(K)
    if name == "ew":
        d, w = ew(G, losses, o.get("reduction") == "mean")
        return d, w
    if name == "rlw":
        rng = Rng(int(o.get("seed", 0)))
        eps = np.array([rng.normal() for _ in range(K)])
        w = np.exp(eps - eps.max())
        w /= w.sum()
        return w @ G, w
    if name == "mgda":
        return mgda(G, losses, o.get("norm", "none"), o.get("solver") == "fw"), ones
    if name == "pcgrad":
        return pcgrad(G, int(o.get("seed", 0)), mean=o.get("reduction") == "mean"), ones
    if name == "cagrad":
        return cagrad(G, float(o.get("c", 0.5)), int(o.get("rescale", 1))), ones
    if name == "imtl":
        return imtl_g(G), ones
    if name == "aligned":
        return aligned(G, o.get("scale", "min")), ones
    if name == "nash":
        a = nash_fixed_point(G)
        return clip(a @ G, float(o.get("max_norm", 1.0))), a
    raise ValueError(spec)


def sequences(t):
    """Multi-step references."""
    # DWA: K = 3, T = 2, epoch mean losses of 4 epochs; weights used in epochs 0..4.
    hist = np.array([[2.0, 1.0, 0.5], [1.5, 0.9, 0.45], [1.2, 0.85, 0.3], [1.0, 0.8, 0.33]])
    T = 2.0
    weights = []
    for e in range(5):
        if e < 2:
            weights.append(np.ones(3))
        else:
            r = hist[e - 1] / hist[e - 2]
            x = np.exp(r / T)
            weights.append(3 * x / x.sum())
    t["seq.dwa.history"] = hist
    t["seq.dwa.weights"] = np.array(weights)

    # RLW: 5 steps, K = 4, seed 11: softmax of 4 normals per step.
    rng = Rng(11)
    rw = []
    for _ in range(5):
        eps = np.array([rng.normal() for _ in range(4)])
        x = np.exp(eps - eps.max())
        rw.append(x / x.sum())
    t["seq.rlw.weights"] = np.array(rw)

    # PCGrad with K = 3 over 4 steps from seed 5 on one G: the random orders advance.
    G = t["c7.G"]
    rng_seed = 5
    out = []
    r = Rng(rng_seed)
    for _ in range(4):
        Kk = len(G)
        acc = np.zeros(G.shape[1])
        for i in range(Kk):
            gpc = G[i].copy()
            for j in r.shuffled(Kk):
                dot = gpc @ G[j]
                if dot < 0:
                    gpc -= dot / (G[j] @ G[j] + 1e-8) * G[j]
            acc += gpc
        out.append(acc)
    t["seq.pcgrad.d"] = np.array(out)

    # GradNorm (LibMTL form): K = 3, alpha = 1.5, logits z trained by SGD lr 0.1 over 3 steps on
    # fixed per-task gradients G (c6.G) and losses; L(0) = epoch-0 mean losses. The gradient of
    # L_grad w.r.t. z is taken by central differences of the explicit formula on vectors.
    G = t["c6.G"]
    L0 = np.array([1.0, 2.0, 0.5])
    steps_losses = np.array([[0.8, 1.9, 0.2], [0.7, 1.5, 0.25], [0.6, 1.7, 0.2]])
    z = np.zeros(3)
    alpha = 1.5
    ws, grads = [], []

    def lgrad(zz, L, target=None):
        w = 3 * np.exp(zz) / np.exp(zz).sum()
        Gk = np.linalg.norm(w[:, None] * G, axis=1)
        if target is None:
            Lt = L / L0
            r_ = Lt / Lt.mean()
            target = Gk.mean() * r_ ** alpha
        return np.abs(Gk - target).sum(), target

    for L in steps_losses:
        w = 3 * np.exp(z) / np.exp(z).sum()
        _, target = lgrad(z, L)
        h = 1e-6
        g = np.array([(lgrad(z + h * e, L, target)[0] - lgrad(z - h * e, L, target)[0]) / (2 * h)
                      for e in np.eye(3)])
        ws.append(w)
        grads.append(g)
        z = z - 0.1 * g
    t["seq.gradnorm.L0"] = L0
    t["seq.gradnorm.losses"] = steps_losses
    t["seq.gradnorm.weights"] = np.array(ws)
    t["seq.gradnorm.grad"] = np.array(grads)


def save(tensors, metadata):
    header, blobs, offset = {}, [], 0
    for key in sorted(tensors):
        a = np.ascontiguousarray(np.asarray(tensors[key], dtype="<f8"))
        data = a.tobytes()
        header[key] = {"dtype": "F64", "shape": list(a.shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(OUT + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(OUT + ".tmp", OUT)
    print(f"wrote {OUT} ({offset} data bytes, {len(tensors)} tensors)", file=sys.stderr)


def main():
    warnings.filterwarnings("ignore")
    rs = np.random.default_rng(20240518)
    cases = spec_cases() + random_cases(rs)
    t = {}
    meta = {"generator": "tools/reference/weighting.py", "numpy": np.__version__,
            "scipy": scipy.__version__, "cases": len(cases), "methods": len(METHODS)}
    for j, spec in enumerate(METHODS):
        meta[f"m{j}"] = spec
    worst_slsqp, worst_ccp = 0.0, 0.0
    for i, G in enumerate(cases):
        losses = rs.uniform(0.2, 3.0, size=len(G))
        t[f"c{i}.G"] = G
        t[f"c{i}.losses"] = losses
        for j, spec in enumerate(METHODS):
            d, heads = run_method(spec, G, losses)
            t[f"c{i}.m{j}.d"] = d
            t[f"c{i}.m{j}.heads"] = heads
        # how far the references' own solvers are from the exact answers stored above
        loose = cagrad(G, 0.5, 1, ftol=1e-6)
        worst_slsqp = max(worst_slsqp, np.max(np.abs(loose - cagrad(G))) /
                          (1 + np.max(np.abs(cagrad(G)))))
        a = nash_ccp(G)
        t[f"nash_ccp.c{i}.d"] = a @ G
        exact = nash_fixed_point(G) @ G
        print(f"case {i}: K={len(G)} Nash CCP {a} vs fixed point {nash_fixed_point(G)}",
              file=sys.stderr)
        worst_ccp = max(worst_ccp, np.max(np.abs(a @ G - exact)) / (1 + np.max(np.abs(exact))))
    meta["cagrad_slsqp_default_tol_max_rel_diff"] = f"{worst_slsqp:.3g}"
    meta["nash_ccp_max_rel_diff"] = f"{worst_ccp:.3g}"
    print(f"CAGrad with SLSQP's default ftol differs by {worst_slsqp:.3g} (relative); "
          f"Nash-MTL's CCP/ECOS differs from the fixed point by {worst_ccp:.3g}", file=sys.stderr)
    sequences(t)
    save(t, meta)


if __name__ == "__main__":
    main()
