"""connections-bot: register data-platform connections from Slack without pasting secrets."""
