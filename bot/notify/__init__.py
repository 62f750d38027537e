"""Telling people in Slack, for the listeners and the jobs alike: replies to one user, the result
of a submitted form, approval requests and decisions, removals, Home tabs, health alerts and
rotation reminders. Nothing here decides anything: the services have, and this says so."""
