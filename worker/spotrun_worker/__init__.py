"""The spotrun worker agent and what it runs programs with: checkpointers, S3 transfers, the checkpoint interval."""
