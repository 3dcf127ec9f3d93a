"""Durable async jobs: the JobTracker actor, its runner, webhooks and the HTTP front end."""
