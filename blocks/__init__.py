"""Pure Block Kit builders: declarations and read models in, Block Kit JSON (dicts) out. No I/O."""
