"""The model the fog trains with its edges: definition, initial weights, numpy math."""
