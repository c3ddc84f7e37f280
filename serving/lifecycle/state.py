"""A model version's states, the one vocabulary that the registry, RepositoryIndex, the admin API and the
`serving_model_version_state` metric all speak (serving/lifecycle/version.py says what each means).

A leaf: it imports nothing of the server, so telemetry can name the states without importing lifecycle.
"""

from __future__ import annotations

import enum


class VersionState(enum.Enum):
    LOADING = "LOADING"
    WARMING = "WARMING"
    READY = "READY"
    DRAINING = "DRAINING"
    UNLOADED = "UNLOADED"
    FAILED = "FAILED"
