"""Test suite (a package so ``tests.integration...`` imports resolve from the rootdir)."""
