"""What `python -m loadtests` exits with: one module both the parser and the commands import.

0 the gate passed (or there was none), 1 it failed (SLO broken, split mismatch, failed action,
candidate regressed), 2 bad invocation (malformed SLO, bad option, bad scenario), 3 the run could not
happen (server unreachable, model unknown, a worker died).
"""

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3
