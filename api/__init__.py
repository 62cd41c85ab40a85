"""The HTTP API: jobs, their trees, paths and progress, and the browser viewers."""
