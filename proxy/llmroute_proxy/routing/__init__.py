"""Pure routing decisions: which tier, which target, when to fail over."""
