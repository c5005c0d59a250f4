"""Reliability suite: faults (client, server, broker), bad input, intrusion and device budgets,
each against real processes (a private Mosquitto with the fleet-init config, `fedhft server`,
`fedhft edge`) and asserted on the final durable state. `fedhft bench reliability` runs it and
prints its figures; harness.py and conftest.py hold the shared fleet harness."""
