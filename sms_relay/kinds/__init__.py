"""Event kinds: each kind is one module (model, templates, consent purposes, policy)."""
