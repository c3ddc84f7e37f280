"""The dynamic batcher: policy (when a batch goes), queue (admission, deadlines), tensors (merge/split),
batcher (scheduling batches onto instances and running them)."""
