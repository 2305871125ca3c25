"""The PipelineConductor's SQL schema (applied by ``mesh.postgres.schema``)."""
