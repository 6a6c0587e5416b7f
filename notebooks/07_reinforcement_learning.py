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
# # Reinforcement learning: PPO balances a pole
#
# In reinforcement learning nobody labels the data: an agent acts, the environment answers
# with a reward, and the agent learns which actions lead to more of it. CartPole-v1
# (Barto, Sutton & Anderson 1983) rewards every step the pole stays up, to a maximum of 500.
# Proximal Policy Optimization (Schulman et al. 2017, in CleanRL's form) learns it in about
# 100,000 environment steps, half a minute on two CPU cores; a random policy lasts about 22
# steps.
#
# `neuralab rl train cartpole_ppo` runs the same preset; the docs' reinforcement-learning
# page (`docs/ideas/reinforcement-learning.md`) has LunarLander and Pong from pixels.

# %%
from pathlib import Path

from IPython.display import Image, display

from neuralab.rl import config as rl_config
from neuralab.rl.run import eval_run, new_run_dir, plot_returns, train

# %% [markdown]
# ## Train
#
# Eight CartPoles are played side by side; every 256 steps PPO takes a few epochs of
# clipped policy-gradient steps on what they saw. Every 25 updates the greedy policy is
# evaluated on fresh episodes and a checkpoint kept.

# %%
cfg = rl_config.load("cartpole_ppo")
run_dir = new_run_dir(None, cfg)
results = train(cfg, run_dir, progress=False)
print(f"{results['env/steps']:,} env steps in {results['train/wall_s']:.0f} s")

# %% [markdown]
# ## The learning curve
#
# Training returns (the policy still explores) and the greedy evaluations, against
# environment steps.

# %%
display(Image(plot_returns(run_dir)))

# %% [markdown]
# ## Watch it
#
# One greedy episode of the best checkpoint, as a GIF.

# %%
gif = Path(run_dir) / "episode.gif"
result = eval_run(run_dir, episodes=20, gif=gif)
display(Image(filename=str(gif)))

# %% [markdown]
# The greedy policy over 20 evaluation episodes. Expected: mean return 500 ± 25.

# %%
print({"metric": "mean return", "value": result["mean_return"]})
