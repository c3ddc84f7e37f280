"""Which model versions exist and are loaded: repository reading, registry, versions, load/unload, polling."""
