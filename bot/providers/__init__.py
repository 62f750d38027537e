"""Provider plug-ins: one module per provider, all behind :class:`bot.providers.base.Provider`."""
