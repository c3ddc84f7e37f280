"""Tests of the load generator (loadtests/): unit tests, runs against the no-op server, and against the real server."""
