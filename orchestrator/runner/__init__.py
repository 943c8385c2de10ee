"""The runner: claim loop, reconcile, attempts, HTTP worker pools, log pump, run dirs."""
