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
# # The five steps of the craft, on Fashion-MNIST
#
# **Prepare data → design the model → train → validate → test.** This notebook walks
# through them with neuralab's Python API on the real Fashion-MNIST (70,000 28×28 grayscale
# images of 10 kinds of clothing; `apt-get install dataset-fashion-mnist`), with a small CNN
# and a short budget so that it runs in about a minute on two CPU cores.
#
# The full preset, `neuralab train fashion_cnn` (14 epochs), reaches about 93% test accuracy
# (92.7% in 318 s on a 2-core Xeon, measured for issue 27; `python benchmarks/vision.py`
# measures it on yours).

# %%
import matplotlib.pyplot as plt  # in a notebook pyplot is yours; neuralab never touches it
import torch

import neuralab
from neuralab import config, data
from neuralab.runs import read_jsonl
from neuralab.train import fit, load_model, new_run_dir, test

torch.manual_seed(0)

# %% [markdown]
# ## 1. Prepare the data
#
# Images enter every model in [0, 1]; the validation split is carved from the training set
# with a fixed seed, and the test split is touched only at the end.

# %%
x_train, y_train = data.load("fashion-mnist", "train")
x_test, y_test = data.load("fashion-mnist", "test")
classes = data.DATASETS.get("fashion-mnist").classes
print(x_train.shape, x_test.shape, classes)

fig, axes = plt.subplots(2, 8, figsize=(10, 3))
for ax, image, label in zip(axes.flat, x_train[:16], y_train[:16], strict=True):
    ax.imshow(image[0], cmap="gray")
    ax.set_title(classes[label], fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. Design the model
#
# The preset's CNN: stages of convolution, BatchNorm, ReLU and max-pooling. Normalisation is
# the first layer inside the model, so a saved model normalises its own inputs.

# %%
cfg = config.load("fashion_cnn", ["train.max_steps=300", "train.val_every=100"])
model = neuralab.create_model(cfg.model.name, in_channels=1, num_classes=10, **cfg.model.options)
print(f"{cfg.model.name}: {model.num_params():,} parameters")

# %% [markdown]
# ## 3. Train, and 4. validate as it goes
#
# `fit` trains with the preset's optimiser and schedule for 300 steps (about 0.7 epochs),
# validates every 100 steps and keeps the best checkpoint. Its run directory holds the
# config, the metrics, the checkpoints and the plots.

# %%
run_dir = new_run_dir(None, cfg, name="notebook_fashion_cnn")
summary = fit(cfg, run_dir, progress=False)
print(f"best val acc {summary['val/acc']:.4f} at step {summary['best_step']}")

records = read_jsonl(run_dir / "metrics.jsonl")
steps = [r["step"] for r in records if "train/loss" in r]
losses = [r["train/loss"] for r in records if "train/loss" in r]
plt.plot(steps, losses)
plt.xlabel("step")
plt.ylabel("training loss")
plt.show()

# %% [markdown]
# ## 5. Test, once, with the best checkpoint
#
# Expected: test accuracy 0.87 ± 0.03 after these 300 steps.

# %%
result = test(run_dir, "best")
print(f"test acc {result['test/acc']:.4f} on {result['test/examples']} images")

confusion = torch.tensor(result["test/confusion"])
plt.imshow(confusion / confusion.sum(dim=1, keepdim=True), cmap="Blues")
plt.xticks(range(10), classes, rotation=90)
plt.yticks(range(10), classes)
plt.title("test confusion (rows: true class)")
plt.show()

# %% [markdown]
# ## The mistakes
#
# The test images the model gets most confidently wrong. Compare their classes with the
# confusion matrix above: the mistakes gather in the same few pairs of similar clothes.

# %%
model = load_model(run_dir)
with torch.no_grad():
    probs = model(x_test).softmax(dim=1)
wrong = (probs.argmax(dim=1) != y_test).nonzero().flatten()
worst = wrong[probs[wrong].max(dim=1).values.argsort(descending=True)[:8]]
fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, i in zip(axes, worst.tolist(), strict=True):
    ax.imshow(x_test[i, 0], cmap="gray")
    ax.set_title(f"{classes[probs[i].argmax()]}\n(is {classes[y_test[i]]})", fontsize=7)
    ax.axis("off")
plt.show()

# %%
print({"metric": "test accuracy", "value": result["test/acc"]})
