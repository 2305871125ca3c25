"""The BatchService's SQL schema (applied by ``mesh.postgres.schema``)."""
