"""The dynamic batcher: queueing, scheduling onto instances, merging and splitting tensors."""
