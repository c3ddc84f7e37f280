"""The inference path below the transports: the domain request, its validation, and the data plane."""
