"""Scale-out: several processes (torchrun, DDP collectives) and shared job storage (Optuna)."""
