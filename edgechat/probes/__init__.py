"""Floor 3, probes: latency timers, power readers, energy, machine load. Imports core and targets only."""
