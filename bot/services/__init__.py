"""Use cases shared by the Slack listeners and the command line. No Slack imports here: services take
plain values and return plain results; each use case is one database transaction."""
