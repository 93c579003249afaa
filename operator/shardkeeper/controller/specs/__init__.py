"""Pure builders: the objects, names and status the operator wants, computed from specs."""
