"""One module per provider API behind one interface (`base.Provider`); pure, no network I/O."""
