"""Graph surgery: a plan applied to the model, one Conv at a time. Knows nothing of the math."""
