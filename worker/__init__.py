"""The Helium worker: one stream per GPU node, executors for GPT and SD tasks."""
