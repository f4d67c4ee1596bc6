"""HTTP routes: each parses a request, calls a serving object, returns its result."""
