"""The ablations, run as DVC experiments (`ablations`), with their override files beside it."""
