"""Prototype behind clean's defaults (docs/cleaning.md): a C*H*W-256-256-K MLP (Adam 1e-3, batch 128, normalized
pixels) trained 3 epochs on all 60,000 MNIST images with 60 % symmetric noise; after each epoch every hidden layer is
cross-fitted (5 folds) with NCM and MASC and scored against the true labels. Run: python bench/clean_defaults_scan.py
"""
import time

import numpy as np
import torch
from torch import nn
from noisefix.data.builtin import load_builtin
from noisefix.data.noise import corrupt_labels
from noisefix.data.splits import make_folds
from noisefix.scoring.cross_fitting import cross_fit
torch.manual_seed(0)
ds = load_builtin("mnist")  # $NOISEFIX_DATA or the standard places
X = torch.tensor(ds.x_train).float().div(255).reshape(60000, -1)
X = (X - 0.1307) / 0.3081
y = ds.y_train
noisy, _ = corrupt_labels(y, num_classes=10, rate=0.6, seed=0)
wrong = noisy != y
m = nn.Sequential(nn.Linear(784,256), nn.ReLU(), nn.Linear(256,256), nn.ReLU(), nn.Linear(256,10))
opt = torch.optim.Adam(m.parameters(), 1e-3); yt = torch.tensor(noisy)
idx = torch.arange(60000)
folds = make_folds(noisy, 5, seed=0)
t0 = time.perf_counter()
def feats():
    with torch.no_grad():
        h1 = m[1](m[0](X)); h2 = m[3](m[2](h1)); return {"h1": h1, "h2": h2, "out": m[4](h2)}
for e in range(1, 4):
    perm = idx[torch.randperm(60000)]
    for s in range(0, 60000, 128):
        b = perm[s:s+128]; opt.zero_grad(); nn.functional.cross_entropy(m(X[b]), yt[b]).backward(); opt.step()
    tt = time.perf_counter()
    F = feats()
    for name, A in F.items():
        for p in ("ncm", "masc"):
            t1 = time.perf_counter()
            s = cross_fit(p, stats=None, X=A, labels=noisy, folds=folds, num_classes=10)
            pred = s.oof_scores.argmax(1); iss = pred != noisy
            tp = (iss & wrong).sum(); P = tp/iss.sum(); R = tp/wrong.sum()
            print(f"ep{e} {name} {p}: acc {np.mean(pred==y):.4f} F1 {2*P*R/(P+R):.4f} ({time.perf_counter()-t1:.1f}s)", flush=True)
    print(f"epoch {e} train {tt-t0:.1f}s", flush=True); t0 = time.perf_counter()
