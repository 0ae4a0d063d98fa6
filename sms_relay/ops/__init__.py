"""On-call commands: trace, dlq, suppress, produce."""
