"""Test support shared by the test suite and by scripts outside pytest (bench, demos)."""
