"""PipelineConductor: pipeline definitions, resolution, and exact step-outcome counting."""
