"""API keys and tenants, rate limits, and the outbound URL policy (SSRF guard)."""
