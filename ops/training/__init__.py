"""Training of the two-branch networks: config, inputs, loop, checkpoints, distributed runs."""
