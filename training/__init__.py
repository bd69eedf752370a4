"""MiniMind in torch and every training stage (one loop for all of them)."""
