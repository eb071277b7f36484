"""Stand-ins for the programs the pack plugs into, for tests that run without them."""
