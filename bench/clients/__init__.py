"""One client per system under test, all behind the `System` and `Session` interfaces."""
