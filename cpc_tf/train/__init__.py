"""Distribution strategies and the custom training loop."""
