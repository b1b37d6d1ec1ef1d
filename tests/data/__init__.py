"""Tests of reconguard.data."""
