"""Pure Block Kit builders: the domain's read models and the providers' declarations in, Block Kit
JSON (dicts) out. No I/O, and nothing from the services, the store or Slack's clients."""
