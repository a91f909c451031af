"""One page of the console per module."""
