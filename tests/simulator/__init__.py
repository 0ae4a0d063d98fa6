"""Tests of the Twilio simulator, driven over HTTP with the real twilio SDK."""
