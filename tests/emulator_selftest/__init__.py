"""Self-tests of the Coolify API emulator (tests/coolify_emulator)."""
