"""The operator's controls of a model (policy, shadow, promote, rollback, history, versions), without gRPC."""
