"""Hyperparameter sweeps with Optuna (Akiba et al. 2019): a search space declared in TOML
(``space``), trials that are ordinary runs with pruning from per-epoch validation reports
(``run``), studies in SQLite for one machine or PostgreSQL for many (``storage``), and
where a sweep stands (``status``). Optuna is imported by those modules only, so the CLI
starts without it::

    from neuralab.sweep.space import load_sweep
    from neuralab.sweep.run import run_sweep
    sweep = load_sweep("fashion_cnn_sweep", ["train.epochs=3"])
    study = run_sweep(sweep, "sqlite:///runs/fashion_cnn_sweep/sweep.db", trials=20, workers=2)
"""
