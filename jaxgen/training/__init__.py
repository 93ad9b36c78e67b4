"""The training core every trainer uses: restore-or-init from a workdir, one loop with periodic
actions, stop on signal or time budget, a non-finite check one step late, data-parallel placement,
metrics, checkpoints, atomic writes and the loader of a trained workdir."""
