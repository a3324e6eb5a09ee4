"""`afp align`: the typed recipe, the training loop, its losses, checkpoints, held-out evaluation and run folder,
on one process or several."""
