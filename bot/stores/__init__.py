"""Secret stores: where an approved credential lives when it is not sealed in the bot's database.

``local`` (the default) keeps every credential as sealed rows in the bot's own database and needs
no module here; ``aws`` and ``vault`` are plug-ins behind :class:`~bot.stores.base.SecretStore`.
"""
