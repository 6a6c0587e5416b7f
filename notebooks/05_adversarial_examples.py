# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Adversarial examples: FGSM and PGD on a trained CNN
#
# A classifier that is right on almost every test image can be made wrong on most of them by
# changes too small to matter to a person (Szegedy et al. 2014; Goodfellow et al. 2015).
# This notebook trains the demo's small CNN on scikit-learn's 8×8 digits (no download),
# attacks it with the fast gradient sign method (FGSM) and projected gradient descent
# (PGD, Madry et al. 2018), and draws the robustness curve: accuracy against the attack's
# budget eps, in pixel units (images are in [0, 1]).
#
# On Fashion-MNIST, `neuralab train fashion_cnn` then
# `neuralab attack runs/... --eps 0.03,0.05,0.1` gives the same picture at full scale, and
# `neuralab train fashion_cnn_trades` trains a model that resists it (the CLI guide,
# `docs/guide/cli.md`, has both).

# %%
import matplotlib.pyplot as plt  # in a notebook pyplot is yours; neuralab never touches it
import torch

from neuralab import config, data
from neuralab.attack import FGSM, PGD, robustness_curve
from neuralab.train import fit, load_model, new_run_dir

torch.manual_seed(0)

# %% [markdown]
# ## A model worth attacking
#
# The demo preset: about 99% test accuracy after 15 epochs (a few seconds).

# %%
cfg = config.load("digits_cnn")
run_dir = new_run_dir(None, cfg, name="notebook_digits_cnn")
fit(cfg, run_dir, progress=False)
model = load_model(run_dir)  # eval mode, takes images in [0, 1]
x, y = data.load("digits", "test")
with torch.no_grad():
    print(f"clean test accuracy {(model(x).argmax(1) == y).float().mean():.4f}")

# %% [markdown]
# ## One step, or many
#
# FGSM takes one step of size eps along the sign of the loss gradient. PGD takes 20 smaller
# steps (2.5·eps/20 each) from a random start, projecting back into the eps-box after each:
# a stronger attack, so its curve lies below FGSM's.

# %%
eps_list = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3]
fgsm = robustness_curve(model, x, y, lambda eps: FGSM(model, eps), eps_list)
pgd = robustness_curve(model, x, y, lambda eps: PGD(model, eps, 2.5 * eps / 20, 20), eps_list)
for name, curve in (("FGSM", fgsm), ("PGD-20", pgd)):
    plt.plot([0] + eps_list, [curve["clean_acc"]] + [r["robust_acc"] for r in curve["results"]],
             "o-", label=name)  # fmt: skip
plt.xlabel("eps (Linf, pixel units)")
plt.ylabel("test accuracy under attack")
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## What the attack changed
#
# Clean images, their PGD versions at eps 0.2 and the difference (scaled to be visible).
# The digits still read the same to us; the model's answers do not.

# %%
attack = PGD(model, 0.2, 2.5 * 0.2 / 20, 20, generator=torch.Generator().manual_seed(0))
x_adv = attack(x[:6], y[:6])
with torch.no_grad():
    clean_pred, adv_pred = model(x[:6]).argmax(1), model(x_adv).argmax(1)
fig, axes = plt.subplots(3, 6, figsize=(9, 4.5))
for i in range(6):
    axes[0, i].imshow(x[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[0, i].set_title(f"clean: {clean_pred[i]}", fontsize=8)
    axes[1, i].imshow(x_adv[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[1, i].set_title(f"PGD: {adv_pred[i]}", fontsize=8)
    axes[2, i].imshow(x_adv[i, 0] - x[i, 0], cmap="coolwarm", vmin=-0.2, vmax=0.2)
for ax in axes.flat:
    ax.axis("off")
plt.show()

# %% [markdown]
# Expected: PGD accuracy at eps 0.1 0.25 ± 0.1 (an undefended model loses three quarters of
# its accuracy to a budget of a tenth of the pixel range, from 0.99 clean).

# %%
at_01 = next(r["robust_acc"] for r in pgd["results"] if r["eps"] == 0.1)
print({"metric": "PGD accuracy at eps 0.1", "value": at_01})
