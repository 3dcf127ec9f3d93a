"""Durable async jobs: tracker, runner, retry policy, webhooks, views, ingress front end."""
