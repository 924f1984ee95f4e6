"""Test support code shared by integration, e2e and reliability tests."""
