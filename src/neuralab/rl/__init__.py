"""Reinforcement learning on Gymnasium environments: REINFORCE (with Karpathy's Pong from
Pixels), PPO and DQN, trained by ``neuralab rl train`` into ordinary run directories.

Gymnasium is an optional dependency (``pip install 'neuralab[rl]'``); importing the
modules here without it raises a ``UserError`` saying so.
"""
