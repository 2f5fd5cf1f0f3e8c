"""The four phases of a sleep cycle. Each orchestrates engines; none imports another."""
