"""A Python client for the pairing gateway: runners and apps, with end-to-end encryption."""
