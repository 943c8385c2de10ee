"""The work of one transaction each: projects, tokens, definitions, jobs, queues,
schedules, webhooks, the runner registry."""
