"""Confident learning in its cheap, strong configuration on full MNIST with 60 % symmetric noise: 5 folds of a
784-256-256-10 MLP, Adam 1e-3, batch 128, 5 epochs each, cleanlab.filter.find_label_issues on the out-of-fold
probabilities. Run: python bench/cleanlab_small_mlp.py
"""
import time

import numpy as np
import torch
from torch import nn
from noisefix.data.builtin import load_builtin
from noisefix.data.noise import corrupt_labels
from noisefix.data.splits import make_folds
torch.manual_seed(0)
ds = load_builtin("mnist")  # $NOISEFIX_DATA or the standard places
X = torch.tensor(ds.x_train).float().div(255).reshape(60000, -1)
y = ds.y_train
noisy, _ = corrupt_labels(y, num_classes=10, rate=0.6, seed=0)
def mlp(): return nn.Sequential(nn.Linear(784,256), nn.ReLU(), nn.Linear(256,256), nn.ReLU(), nn.Linear(256,10))
def train(idx, epochs):
    m = mlp(); opt = torch.optim.Adam(m.parameters(), 1e-3); yt = torch.tensor(noisy)
    for e in range(epochs):
        perm = idx[torch.randperm(len(idx))]
        for s in range(0, len(perm), 128):
            b = perm[s:s+128]; opt.zero_grad(); nn.functional.cross_entropy(m(X[b]), yt[b]).backward(); opt.step()
    return m
t0 = time.perf_counter()
folds = make_folds(noisy, 5, seed=0); probs = np.zeros((60000,10))
for f in range(5):
    m = train(torch.tensor(np.flatnonzero(folds != f)), 5)
    r = np.flatnonzero(folds == f)
    with torch.no_grad(): probs[r] = torch.softmax(m(X[r]), 1).numpy()
t1 = time.perf_counter()
from cleanlab.filter import find_label_issues
iss = find_label_issues(noisy, probs)
t2 = time.perf_counter()
wrong = noisy != y
tp = (iss & wrong).sum(); P = tp / iss.sum(); R = tp / wrong.sum()
print(f"train {t1-t0:.1f}s find {t2-t1:.1f}s  P {P:.3f} R {R:.3f} F1 {2*P*R/(P+R):.3f}")
