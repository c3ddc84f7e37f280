"""Which version serves a request: traffic policies, their persistence, the router and shadow copies."""
