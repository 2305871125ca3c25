"""Python async client SDK for the PipelineConductor and the BatchService."""
