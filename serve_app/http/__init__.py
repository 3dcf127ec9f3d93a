"""Runs in the ingress: routes, error mapping, middlewares, wire schemas, response formats."""
