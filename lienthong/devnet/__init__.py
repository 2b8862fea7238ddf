"""A local development network on one machine: PKI, brokers and nodes, for tests and the demo."""
