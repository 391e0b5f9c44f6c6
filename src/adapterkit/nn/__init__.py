"""Building blocks every method shares: activations and initialisers, the dtype bridge, gates."""
