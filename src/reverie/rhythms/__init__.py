"""Rhythms: which part of the sleep cycle runs when (daily, weekly, monthly presets, or a workspace's own file).

A rhythm is a set of slots, each with a cron-like schedule, the phases it runs (or a memory-only action) and what
it may change. `reverie rhythm run NAME` runs whatever is due now and is safe to call from cron or a systemd
timer; `reverie rhythm serve NAME` keeps an APScheduler loop in the foreground (optionally on an accelerated
simulated clock).

A cycle split across slots (Learn on Monday, Dream on Thursday) is one registry cycle that each slot resumes, and
a resume is refused when the config fingerprint differs from the one the cycle started with. So the config
overrides that set a rhythm's depth (a LoRA-only Dream, a quick Gate subset) are declared once per rhythm and
apply to every slot; a slot may carry overrides of its own only when it cannot touch an open cycle: a memory-only
slot, or one that runs a whole cycle from Learn to Gate. A rhythm that wants a shallow Gate and a deep Learn in one
cycle is one config, not two: its depth is chosen per rhythm, not per slot.

Modules: spec (the file format and loading), schedule (occurrences and clocks), actions (the memory-only
actions), runner (what is due, the lock, the records), install (systemd and cron text).
"""
