"""Tests for fedpeft.devices."""
