"""Drop-in APIs of the hosted products we replace: each module is a thin adapter that speaks the
product's paths, fields and error shapes over the native services (no second job model)."""
