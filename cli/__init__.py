"""The `sms-relay` console script: one subcommand per deployable and per on-call task."""
